"""Transactions keyed as the connector keys them: TransactionKeyAndPayout over rows of one payout slice."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

from airbyte_cdk.sources.types import StreamSlice
from components import TransactionKeyAndPayout


def payout_slice(ref: str = "P1", payout_date: str = "2024-02-01T06:00:00Z") -> StreamSlice:
    """The slice of one payout's transactions partition, as the payouts router builds it."""
    return StreamSlice(partition={"payment_reference": ref, "parent_slice": {}}, cursor_slice={}, extra_fields={"payout_date": payout_date})


def keyed(
    rows: List[Dict[str, Any]], stream_slice: Optional[StreamSlice] = None, transformation: Optional[TransactionKeyAndPayout] = None
) -> List[Dict[str, Any]]:
    """Copies of `rows` with transaction_key, payment_reference and payout_date, read as one partition."""
    transformation = transformation or TransactionKeyAndPayout(parameters={})
    stream_slice = payout_slice() if stream_slice is None else stream_slice
    out = []
    for row in rows:
        record = copy.deepcopy(row)
        transformation.transform(record, config={}, stream_slice=stream_slice)
        out.append(record)
    return out
