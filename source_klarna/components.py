"""Custom components: only what the manifest cannot say itself.

`TransactionKeyAndPayout` gives each Klarna transaction a stable primary key and its payout's date.
Klarna's transactions carry no id, and two rows of one payout can be identical to the byte (two equal
fixed fees on one order), so no field or set of fields is unique. The key is

    <payment_reference>:<sha1 of the row's Klarna fields, 20 hex chars>:<occurrence>

where <occurrence> numbers identical rows inside the payout 0, 1, 2, ... in the order Klarna lists
them. Identical rows are interchangeable, so the key does not depend on Klarna's row order, and a
re-read of the same payout yields the same keys. Only the fields of Klarna's published Transaction
schema enter the hash, so a field Klarna adds later does not change the keys of rows already synced.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import InitVar, dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import orjson

from airbyte_cdk.sources.declarative.transformations import RecordTransformation
from airbyte_cdk.sources.types import Config, StreamSlice, StreamState

# The fields of Klarna's Transaction schema (settlements OpenAPI), in a fixed order.
TRANSACTION_KEY_FIELDS = (
    "amount",
    "capture_id",
    "merchant_reference1",
    "sale_date",
    "type",
    "capture_date",
    "payment_reference",
    "order_id",
    "payout",
    "refund_id",
    "short_order_id",
    "merchant_reference2",
    "currency_code",
    "purchase_country",
    "vat_rate",
    "vat_amount",
    "shipping_country",
    "initial_payment_method_type",
    "initial_number_of_installments",
    "initial_payment_method_monthly_downpayments",
    "merchant_capture_reference",
    "merchant_refund_reference",
    "detailed_type",
    "tax_in_currency_of_registration_country",
    "currency_code_of_registration_country",
    "klarna_comment",
    "reversal_reference",
)


def transaction_fingerprint(record: Mapping[str, Any]) -> str:
    """A short hash of the row's Klarna fields (absent and null hash alike)."""
    values = [record.get(name) for name in TRANSACTION_KEY_FIELDS]
    return hashlib.sha1(orjson.dumps(values)).hexdigest()[:20]


class OccurrenceCounter:
    """Counts how often each fingerprint was seen in each payout partition being read.

    Counts belong to one partition object (the slice the CDK passes with every page of that
    partition), not to the payment_reference: should the CDK read a payout twice in one sync, the
    second read numbers its identical rows from 0 again and so repeats the first read's keys. A
    partition's pages are read one after another by one worker and at most `concurrency` (<= 30)
    partitions are read at once, so keeping the counters of the `capacity` most recent partitions is
    exact while bounding memory on accounts with millions of transactions. Each entry holds its
    slice, so the id() it is keyed by cannot be reused while the entry lives.
    """

    def __init__(self, capacity: int = 512) -> None:
        self._capacity = capacity
        self._counts: "OrderedDict[int, Tuple[Any, Dict[str, int]]]" = OrderedDict()
        self._lock = threading.Lock()

    def next_occurrence(self, partition: Any, fingerprint: str) -> int:
        with self._lock:
            entry = self._counts.get(id(partition))
            if entry is None:
                entry = self._counts[id(partition)] = (partition, {})
                if len(self._counts) > self._capacity:
                    self._counts.popitem(last=False)
            counts = entry[1]
            occurrence = counts.get(fingerprint, 0)
            counts[fingerprint] = occurrence + 1
            return occurrence


@dataclass
class TransactionKeyAndPayout(RecordTransformation):
    """Adds `transaction_key`, and `payment_reference`/`payout_date` from the payout partition."""

    parameters: InitVar[Mapping[str, Any]] = None
    counter: OccurrenceCounter = field(default_factory=OccurrenceCounter)

    def transform(
        self,
        record: Dict[str, Any],
        config: Optional[Config] = None,
        stream_state: Optional[StreamState] = None,
        stream_slice: Optional[StreamSlice] = None,
    ) -> None:
        payment_reference = None
        payout_date = None
        if stream_slice is not None:
            payment_reference = stream_slice.partition.get("payment_reference")
            payout_date = stream_slice.extra_fields.get("payout_date")
        payment_reference = payment_reference or record.get("payment_reference")
        if not record.get("payment_reference"):
            record["payment_reference"] = payment_reference
        if payout_date is not None:
            record["payout_date"] = payout_date
        fingerprint = transaction_fingerprint(record)
        occurrence = self.counter.next_occurrence(stream_slice, fingerprint)
        record["transaction_key"] = f"{payment_reference}:{fingerprint}:{occurrence}"
