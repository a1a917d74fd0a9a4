"""What happens to orders that are already paid out: refunds growth adds to old orders, orders that are gone
(404) from a growth step on, and disputes (the initial ones and those growth opens and moves on).

Every event is a pure function of the spec and the growth steps. Its rows (``records.ExtraRow``) are
appended to a payout after that payout's own rows and those of a pending set it took in; the payout's totals
count them. ``Events`` is the immutable record of them all, swapped with the dataset's views on every grow;
``EventsMixin`` is the part of ``Dataset`` that decides them (dataset.py has the reading side).

Rules
-----
* Growth counts ``refunds_on_old_orders``, ``gone_orders`` and ``new_disputes`` need ``new_payouts >= 1``:
  their rows land in the step's FIRST new payout, and the orders are drawn among those of payouts that
  existed before the step (their own orders, not a pending set's), in that payout's currency, neither
  purged nor gone, each order at most once per step; drawn from ``{seed}:grow:{step}:<kind>`` (step = the
  0-based index of the growth step). Too few such orders: ValueError, and the dataset is unchanged.
* A refund on an old order: an order with at least 100 minor units captured and not refunded (orders no
  growth step refunded yet first); amount: all of it (35 %) or 100 + a uniform share of the rest; refund
  id, ``RET-`` reference (70 %) as the generator draws them; ``refunded_at`` = tau (below). A RETURN row
  ``PURCHASE_RETURN`` with its ``refund_id``.
* A gone order: answers 404 from the step on; a FEE row ``SERVICING_FEE`` of 50..499 names it.
* tau, the time of a step = its first new payout's ``payout_date`` - 1 h.
* Disputes: see disputes.py for their life and money. The initial ones (``DatasetSpec.disputes``) are drawn
  in the states ``disputes.INITIAL_TARGETS`` in turn, over orders of the initial payouts, opened 1-11 h after
  their order's payout, their history already written: every event at least an hour before the newest
  initial payout, every money row in the first non-empty initial payout of the dispute's currency dated after
  the event; a state whose history does not fit the payouts falls back (closed -> replied -> opened, the fee
  dropped last). A growth step with new payouts moves every open dispute (not those it opens) one state on at
  tau: a move with money needs a new payout of the step in the dispute's currency (the first one gets the
  row), else the dispute waits; an expiry waits for its deadline; steps without new payouts move nothing.
  ``new_disputes`` open at tau, their fee row in the first new payout.
"""
from __future__ import annotations

import bisect
import json
import random
from dataclasses import dataclass, field, replace

from . import disputes as dsp
from .dates import DAY, HOUR
from .orders import code, uuid4
from .records import ExtraRow, RefundEvent

__all__ = ["Events", "EventsMixin", "STEP_KINDS"]

#: the counts of a growth step, in positional order (``--grow NEW:LATE:REFUNDS:GONE:DISPUTES``)
STEP_KINDS = ("new_payouts", "late_payouts", "refunds_on_old_orders", "gone_orders", "new_disputes")
_PICK_ATTEMPTS = 32  #: random draws per wanted order before the scan over every candidate order


@dataclass(frozen=True, slots=True)
class Events:
    """Every event so far (replaced, never changed)."""

    refunds: dict = field(default_factory=dict)  #: order_id -> ((amount, RefundEvent), ...) growth added
    gone: dict = field(default_factory=dict)  #: order_id -> the growth step it went in
    extra_payouts: dict = field(default_factory=dict)  #: order_id -> (PayoutMeta, ...) holding its extra rows
    disputes: tuple = ()  #: Dispute by number
    dispute_numbers: dict = field(default_factory=dict)  #: dispute_krn -> number


@dataclass
class _StepPlan:
    """The orders a growth step draws, decided before the dataset changes."""

    refunds: list = field(default_factory=list)  #: (meta, order index, amount, RefundEvent)
    gone: list = field(default_factory=list)  #: (meta, order index, fee amount)
    disputes: list = field(default_factory=list)  #: (meta, order index)


class _Placer:
    """Collects extra rows per payout and the payouts holding an order's rows."""

    def __init__(self, events: Events):
        self.rows: dict = {}  # PayoutMeta -> [(sort key, ExtraRow)]
        self.extra_payouts = dict(events.extra_payouts)

    def place(self, meta, row: ExtraRow, order_id: str, key=()):
        self.rows.setdefault(meta.pos, (meta, []))[1].append((key, row))
        held = self.extra_payouts.get(order_id, ())
        if meta not in held:
            self.extra_payouts[order_id] = tuple(sorted(held + (meta,), key=lambda m: (m.ts, m.ref)))


class EventsMixin:
    """The event side of ``Dataset`` (uses its payouts, generators and caches)."""

    # ------------------------------------------------------------------ orders eligible for an event

    def _candidate_payouts(self, currency: str) -> list:
        """Payouts (existing now) of ``currency`` that have orders of their own."""
        return [m for m in self._metas if m.currency == currency and self._own_row_count(m) > 0]

    def _pick_orders(self, rng: random.Random, pool: list, k: int, ok, prefer=None) -> list:
        """Up to ``k`` distinct (meta, order index) with ``ok(meta, index, content)``, those passing
        ``prefer`` first: random draws, then a scan of every order from a random payout on."""
        chosen, seen = [], set()
        if k <= 0 or not pool:
            return chosen
        for accept in ((prefer, ok) if prefer is not None else (ok,)):
            for _ in range(_PICK_ATTEMPTS * k):
                if len(chosen) == k:
                    break
                meta = pool[int(rng.random() * len(pool))]
                content = self._materialize(meta)
                i = int(rng.random() * len(content.order_details))
                oid = content.order_details[i].order_id
                if oid not in seen and accept(meta, i, content):
                    seen.add(oid)
                    chosen.append((meta, i))
            start = int(rng.random() * len(pool))
            for j in range(len(pool)):
                if len(chosen) == k:
                    break
                meta = pool[(start + j) % len(pool)]
                content = self._materialize(meta)
                for i, detail in enumerate(content.order_details):
                    if len(chosen) == k:
                        break
                    if detail.order_id not in seen and accept(meta, i, content):
                        seen.add(detail.order_id)
                        chosen.append((meta, i))
            if len(chosen) == k:
                break
        return chosen

    # ------------------------------------------------------------------ a growth step

    def _plan_step(self, step: int, events: Events, currency: str, tau: int, n_refunds: int, n_gone: int,
                   n_disputes: int) -> _StepPlan:
        """Draw the orders of a step's events (raises ValueError when too few orders qualify)."""
        plan = _StepPlan()
        pool = self._candidate_payouts(currency)
        touched: set = set()
        seed = self._seed

        def free(meta, i, content):
            oid = content.order_details[i].order_id
            return oid not in touched and oid not in events.gone and not self.is_purged(oid)

        def refundable(meta, i, content):
            return free(meta, i, content) and self._refundable_amount(content, i, events) >= 100

        def check(picks, k, what):
            if len(picks) < k:
                raise ValueError(f"{what}={k}: only {len(picks)} orders of paid-out {currency} payouts qualify")
            touched.update(self._materialize(m).order_details[i].order_id for m, i in picks)

        rng = random.Random(f"{seed}:grow:{step}:refunds")
        picks = self._pick_orders(rng, pool, n_refunds, refundable,
                                  lambda m, i, c: refundable(m, i, c) and
                                  c.order_details[i].order_id not in events.refunds)
        check(picks, n_refunds, "refunds_on_old_orders")
        for meta, i in picks:
            avail = self._refundable_amount(self._materialize(meta), i, events)
            rand = rng.random
            amount = avail if rand() < 0.35 else 100 + int((avail - 100) * rand())
            event = RefundEvent(uuid4(rng), tau, (f"RET-{code(rng, 8)}" if rand() < 0.7 else None))
            plan.refunds.append((meta, i, amount, event))

        rng = random.Random(f"{seed}:grow:{step}:gone")
        picks = self._pick_orders(rng, pool, n_gone, free)
        check(picks, n_gone, "gone_orders")
        plan.gone = [(meta, i, 50 + int(450 * rng.random())) for meta, i in picks]

        rng = random.Random(f"{seed}:grow:{step}:disputes")
        disputed = {d.order_id for d in events.disputes}
        picks = self._pick_orders(rng, pool, n_disputes, free,
                                  lambda m, i, c: free(m, i, c) and c.order_details[i].order_id not in disputed)
        check(picks, n_disputes, "new_disputes")
        plan.disputes = picks
        return plan

    def _refundable_amount(self, content, i: int, events: Events) -> int:
        plan = content.order_plans[i]
        added = events.refunds.get(content.order_details[i].order_id, ())
        return sum(plan.captures) - sum(plan.refunds) - sum(amount for amount, _ in added)

    def _apply_step(self, step: int, events: Events, new_metas: list, plan: _StepPlan | None) -> tuple:
        """The events of a step with new payouts: -> (Events, the step's log entry). Sets the payouts' rows."""
        first = new_metas[0]
        tau = first.ts - HOUR
        placer = _Placer(events)
        refunds, gone = dict(events.refunds), dict(events.gone)
        disputes, numbers = list(events.disputes), dict(events.dispute_numbers)
        log = {"refunded_orders": [], "gone_orders": [], "opened_disputes": [], "moved_disputes": []}
        plan = plan or _StepPlan()
        for meta, i, amount, event in plan.refunds:
            oid = self._materialize(meta).order_details[i].order_id
            refunds[oid] = refunds.get(oid, ()) + ((amount, event),)
            placer.place(first, ExtraRow("RETURN", "PURCHASE_RETURN", amount, meta.pos, i, 0, event), oid)
            log["refunded_orders"].append(oid)
        for meta, i, amount in plan.gone:
            oid = self._materialize(meta).order_details[i].order_id
            gone[oid] = step
            placer.place(first, ExtraRow("FEE", "SERVICING_FEE", amount, meta.pos, i, -1), oid)
            log["gone_orders"].append(oid)
        for n, d in enumerate(disputes):
            move = dsp.next_transition(d, tau) if d.is_open else None
            if move is None:
                continue
            state, ts, row = move
            payout = None
            if row is not None:
                payout = next((m for m in new_metas if m.currency == d.currency), None)
                if payout is None:
                    continue  # its money needs a payout of its currency: it waits
                placer.place(payout, row, d.order_id)
            disputes[n] = dsp.advance(d, state, ts, None if payout is None else payout.ref)
            log["moved_disputes"].append({"dispute_krn": d.krn, "investigation_status": state})
        for meta, i in plan.disputes:
            n = len(disputes)
            draws = dsp.draw(self._seed, n)
            d = self._new_dispute(n, draws, dsp.outcome_for("opened", draws.u_outcome), meta, i, tau, draws.fee)
            row = dsp.fee_row(d)
            if row is not None:
                placer.place(first, row, d.order_id)
                d = replace(d, payouts=(first.ref,))
            disputes.append(d)
            numbers[d.krn] = n
            log["opened_disputes"].append(d.krn)
        self._set_extra_rows(placer)
        return Events(refunds, gone, placer.extra_payouts, tuple(disputes), numbers), log

    def _set_extra_rows(self, placer: _Placer):
        for meta, keyed in placer.rows.values():
            rows = tuple(row for _, row in sorted(keyed, key=lambda kr: kr[0]))  # stable: growth keys are ()
            meta.extra = meta.extra + rows
            meta.row_count += len(rows)
            self._forget(meta)

    def _forget(self, meta):
        """Drop whatever is cached of a payout whose rows changed (only while it is not served yet)."""
        self._totals.pop(meta.pos, None)
        self._payout_json.pop(meta.pos, None)
        self._content.drop(meta.pos)
        self._rows_json.drop(meta.pos)

    # ------------------------------------------------------------------ disputes

    def _new_dispute(self, n: int, draws, outcome: str, meta, i: int, opened_ts: int, fee: bool):
        content = self._materialize(meta)
        plan, detail = content.order_plans[i], content.order_details[i]
        order = json.loads(self._order_json(meta, plan, detail, i))
        c = int(draws.u_capture * len(detail.captures))
        lines = order["order_lines"]
        line = lines[int(draws.u_line * len(lines))]
        quantity = 1 + int(draws.u_quantity * line["quantity"])
        amount = max(1, min(plan.captures[c], line["total_amount"] * quantity // line["quantity"]))
        summary = (("order_id", order["order_id"]), ("created_at", order["created_at"]),
                   ("order_amount", order["order_amount"]), ("purchase_currency", order["purchase_currency"]),
                   ("merchant_reference1", order["merchant_reference1"]),
                   ("merchant_reference2", order.get("merchant_reference2")),
                   ("merchant_data", order["merchant_data"]))
        return dsp.Dispute(
            n=n, krn=dsp.krn(draws.reason, draws.number), reason=draws.reason, outcome=outcome,
            currency=meta.currency, order_id=detail.order_id, order_pos=meta.pos, order_index=i, capture_index=c,
            capture_id=detail.captures[c].capture_id, disputed_amount=amount,
            fee=dsp.fee_amount(meta.currency) if fee else None, line_reference=line["reference"],
            disputed_quantity=quantity, order=summary, opened_ts=opened_ts,
            deadline_ts=opened_ts + dsp.RESPONSE_DAYS * DAY)

    @staticmethod
    def _initial_tries(target: str, fee: bool) -> list:
        """(state, with its fee, with the time constraints) to try, best first."""
        chain = {"won": ("won", "replied", "opened"), "lost": ("lost", "replied", "opened"),
                 "replied": ("replied", "opened")}.get(target, (target, "opened") if target != "opened"
                                                       else ("opened",))
        tries = [(t, fee, True) for t in chain]
        if fee:
            tries.append(("opened", False, True))
        return tries + [("opened", False, False)]

    def _initial_disputes(self) -> Events:
        """The spec's initial disputes, their histories written and their rows placed."""
        newest = self._newest_ts()
        by_currency: dict = {}
        for meta in self._metas:
            if self._own_row_count(meta) > 0:
                by_currency.setdefault(meta.currency, []).append(meta)
        stamps = {c: [m.ts for m in metas] for c, metas in by_currency.items()}
        placer = _Placer(Events())
        records, numbers, disputed = [], {}, set()
        for n in range(int(self.spec.disputes)):
            draws = dsp.draw(self._seed, n)
            intended = dsp.INITIAL_TARGETS[n % len(dsp.INITIAL_TARGETS)]
            outcome = dsp.outcome_for(intended, draws.u_outcome)  # a fallback state lies on its path
            for target, fee, strict in self._initial_tries(intended, draws.fee):
                history = dsp.history(target, outcome, draws)
                ranges = self._initial_ranges(history, outcome, fee, strict, target, draws, stamps, newest)
                pick = self._initial_order(ranges, by_currency, draws, disputed)
                if pick is not None:
                    break
            else:  # pragma: no cover - the last try has no constraint and there is a non-empty payout
                raise ValueError("disputes need an initial payout with transactions")
            meta, i = pick
            d = self._new_dispute(n, draws, outcome, meta, i, meta.ts + draws.open_s, fee)
            disputed.add(d.order_id)
            metas, ts_list = by_currency[meta.currency], stamps[meta.currency]
            if fee:
                payout = metas[bisect.bisect_right(ts_list, d.opened_ts)]
                placer.place(payout, dsp.fee_row(d), d.order_id, (d.opened_ts, n, 0))
                d = replace(d, payouts=(payout.ref,))
            for seq, (state, offset) in enumerate(history[1:], 1):
                ts = d.opened_ts + offset
                row = None if state == "replied" else dsp.closing_row(d)
                payout = None
                if row is not None:
                    payout = metas[bisect.bisect_right(ts_list, ts)]
                    placer.place(payout, row, d.order_id, (ts, n, seq))
                d = dsp.advance(d, state, ts, None if payout is None else payout.ref)
            records.append(d)
            numbers[d.krn] = n
        self._set_extra_rows(placer)  # forgets what is cached of each payout that gained rows
        return Events(extra_payouts=placer.extra_payouts, disputes=tuple(records), dispute_numbers=numbers)

    @staticmethod
    def _initial_ranges(history, outcome, fee, strict, target, draws, stamps, newest) -> list:
        """[(currency, first index, end index)]: the payouts of each currency an initial dispute in that
        state may be over."""
        closes = history[-1][0] in ("closed", "loss_accepted", "deadline_expired")
        money = [0] if fee else []
        if closes and (outcome != "won" or fee):
            money.append(history[-1][1])
        out = []
        for currency, ts_list in stamps.items():
            if not strict:
                out.append((currency, 0, len(ts_list)))
                continue
            hi = newest - HOUR - draws.open_s - history[-1][1]  # every event an hour before the newest payout
            if money:  # a payout of its currency after its last money event
                hi = min(hi, ts_list[-1] - draws.open_s - max(money) - 1)
            lo = newest - draws.open_s - dsp.RESPONSE_DAYS * DAY if target == "opened" else None
            first = 0 if lo is None else bisect.bisect_right(ts_list, lo)
            end = bisect.bisect_right(ts_list, hi)
            if first < end:
                out.append((currency, first, end))
        return out

    def _initial_order(self, ranges, by_currency, draws, disputed):
        """(meta, order index) of an initial dispute among the ranges' payouts, or None: the payout drawn
        first (then the next ones), the order drawn in it (then the next ones), neither purged nor disputed
        when possible."""
        candidates = [by_currency[c][j] for c, first, end in ranges for j in range(first, end)]
        if not candidates:
            return None
        start = int(draws.u_payout * len(candidates))
        for relax in (0, 1, 2):  # 1: an order already disputed, 2: a purged one
            for j in range(len(candidates)):
                meta = candidates[(start + j) % len(candidates)]
                details = self._materialize(meta).order_details
                first = int(draws.u_order * len(details))
                for o in range(len(details)):
                    oid = details[(first + o) % len(details)].order_id
                    if (relax >= 1 or oid not in disputed) and (relax >= 2 or not self.is_purged(oid)):
                        return meta, (first + o) % len(details)
        return None  # pragma: no cover

    # ------------------------------------------------------------------ reading

    def is_gone(self, order_id: str) -> bool:
        """Whether a growth step made the order gone (its GET answers 404 from that step on)."""
        return order_id in self._views.events.gone

    def gone_order_ids(self) -> list:
        """The gone orders, in the order growth made them gone."""
        return list(self._views.events.gone)

    def step_events(self) -> list:
        """Per growth step: ``refunded_orders``, ``gone_orders``, ``opened_disputes`` (KRNs) and
        ``moved_disputes`` (``dispute_krn`` and the ``investigation_status`` it moved to)."""
        return json.loads(json.dumps(self._step_log))

    @property
    def dispute_count(self) -> int:
        return len(self._views.events.disputes)

    def _dispute_json(self, d) -> bytes:
        cached = self._dispute_bytes.get(d.n)
        if cached is None or cached[0] is not d:
            cached = self._dispute_bytes[d.n] = (d, json.dumps(dsp.dispute_dict(d, self.spec.merchant_id),
                                                                separators=(",", ":")).encode())
        return cached[1]

    def disputes(self) -> list:
        """Every dispute as served, in the order they were opened (their numbers)."""
        return [json.loads(self._dispute_json(d)) for d in self._views.events.disputes]

    def dispute_json(self, dispute_krn: str):
        """Serialized dispute, or None (unknown)."""
        events = self._views.events
        n = events.dispute_numbers.get(dispute_krn)
        return None if n is None else self._dispute_json(events.disputes[n])

    def dispute(self, dispute_krn: str):
        b = self.dispute_json(dispute_krn)
        return None if b is None else json.loads(b)

    def disputes_page(self, query) -> tuple:
        """-> (serialized disputes of the page, total, next_page cursor or None) for a ``DisputeQuery``."""
        page, total, cursor = dsp.select_page(self._views.events.disputes, query, self.spec.merchant_id)
        return [self._dispute_json(d) for d in page], total, cursor

    def dispute_transactions(self, dispute_krn: str) -> list:
        """The settlement rows whose reversal_reference is the dispute's KRN, oldest payout first."""
        events = self._views.events
        n = events.dispute_numbers.get(dispute_krn)
        if n is None:
            return []
        return [dict(r) for ref in events.disputes[n].payouts for r in self._materialize(self._refs[ref]).rows
                if r.get("reversal_reference") == dispute_krn]
