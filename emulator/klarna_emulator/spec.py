"""``DatasetSpec``: the few numbers and names the whole dataset is a pure function of."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .dates import parse_datetime
from .orders import MAX_ORDERS_PER_PAYOUT, PENDING_POS_BASE

__all__ = ["DatasetSpec", "MAX_PAYOUTS", "MAX_DISPUTES"]

#: payout positions are 32 bits of an order id; the upper half is the pending transactions' (orders.py)
MAX_PAYOUTS = PENDING_POS_BASE
#: initial disputes (a dispute's number is 20 bits of its KRN, growth's included)
MAX_DISPUTES = 1 << 16


@dataclass(frozen=True)
class DatasetSpec:
    seed: int = 1
    payouts: int = 50
    transactions_per_payout: int = 40
    currencies: tuple = ("EUR", "SEK", "USD")
    first_payout_date: str = "2024-01-01T00:00:00Z"
    merchant_id: str = "K123456"
    identical_rows_per_payout: int = 2
    purged_order_ratio: float = 0.0
    #: how many of the initial payouts have no transactions at all (every k-th, k = payouts // empty_payouts)
    empty_payouts: int = 0
    #: transactions not yet in any payout: in the unfiltered /transactions list (after every payout's
    #: rows) without payment_reference and payout; each grow(new_payouts >= 1) moves them into its first
    #: new payout and draws a fresh set
    pending_transactions: int = 0
    #: how many of the oldest payouts (the first generated) serve settlement_amount 100 above their rows' sum
    unreconciled_payouts: int = 0
    #: disputes (Disputes API v2) over orders of the initial payouts, in a mix of states; their money is in
    #: the initial payouts (events.py, disputes.py)
    disputes: int = 0

    def __post_init__(self):
        cur = self.currencies
        if isinstance(cur, str):
            cur = tuple(c.strip() for c in cur.split(",") if c.strip())
        cur = tuple(str(c).upper() for c in cur)
        object.__setattr__(self, "currencies", cur)
        if not cur or any(not re.fullmatch(r"[A-Z]{3}", c) for c in cur) or len(set(cur)) != len(cur):
            raise ValueError(f"currencies must be distinct ISO 4217 codes, got {cur!r}")
        if not (0 <= int(self.payouts) < MAX_PAYOUTS):
            raise ValueError("payouts must be >= 0")
        if not (0 <= int(self.transactions_per_payout) < MAX_ORDERS_PER_PAYOUT):
            raise ValueError("transactions_per_payout must be in [0, 65535]")
        if int(self.identical_rows_per_payout) < 0:
            raise ValueError("identical_rows_per_payout must be >= 0")
        if not (0.0 <= float(self.purged_order_ratio) <= 1.0):
            raise ValueError("purged_order_ratio must be in [0, 1]")
        if not (0 <= int(self.empty_payouts) <= int(self.payouts)):
            raise ValueError("empty_payouts must be in [0, payouts]")
        if not (0 <= int(self.pending_transactions) < MAX_ORDERS_PER_PAYOUT):
            raise ValueError("pending_transactions must be in [0, 65535]")
        if not (0 <= int(self.unreconciled_payouts) <= int(self.payouts)):
            raise ValueError("unreconciled_payouts must be in [0, payouts]")
        if not (0 <= int(self.disputes) < MAX_DISPUTES):
            raise ValueError(f"disputes must be in [0, {MAX_DISPUTES - 1}]")
        if int(self.disputes) and (int(self.transactions_per_payout) == 0
                                   or int(self.empty_payouts) >= int(self.payouts)):
            raise ValueError("disputes need an initial payout with transactions")
        parse_datetime(self.first_payout_date)  # validates

    def is_empty_payout(self, i: int) -> bool:
        """Whether regular payout ``i`` (0-based generation order) has no transactions: with
        ``k = payouts // empty_payouts``, payouts ``k - 1, 2k - 1, ...``, ``empty_payouts`` of them. Payouts
        added by growth always have transactions."""
        empty = int(self.empty_payouts)
        if empty == 0 or i >= int(self.payouts):
            return False
        k = int(self.payouts) // empty
        return i % k == k - 1 and i < k * empty

    def is_unreconciled_payout(self, i: int) -> bool:
        """Whether regular payout ``i`` (0-based generation order) serves a ``settlement_amount`` 100
        above the signed sum of its transactions: the first ``unreconciled_payouts`` ones, the oldest."""
        return i < int(self.unreconciled_payouts)

    def to_cli_args(self) -> list:
        """The ``python -m klarna_emulator`` flags describing this spec."""
        return [
            "--seed", str(self.seed),
            "--payouts", str(self.payouts),
            "--transactions-per-payout", str(self.transactions_per_payout),
            "--currencies", ",".join(self.currencies),
            "--first-payout-date", self.first_payout_date,
            "--merchant-id", self.merchant_id,
            "--identical-rows-per-payout", str(self.identical_rows_per_payout),
            "--purged-order-ratio", repr(float(self.purged_order_ratio)),
            "--empty-payouts", str(self.empty_payouts),
            "--pending-transactions", str(self.pending_transactions),
            "--unreconciled-payouts", str(self.unreconciled_payouts),
            "--disputes", str(self.disputes),
        ]
