"""Disputes (Klarna's Disputes API v2): the initial disputes and their money in the settlements, their moves
on growth, and ``GET /disputes/v2/disputes[/{krn}]`` with its access checks, paging, sorting and filters.

Run from the repository root: `.venv/bin/pytest -q emulator/tests/test_disputes.py`.
"""
from __future__ import annotations

import collections
import json
import re
from urllib.parse import quote

import jsonschema
import pytest
import requests
import yaml

from klarna_emulator import Dataset, DatasetSpec, FaultConfig, KlarnaEmulator
from klarna_emulator.__main__ import build_parser
from klarna_emulator.dataset import TOTALS_BY_TYPE, parse_datetime
from reference import SETTLEMENTS_OPENAPI

import emulator_session
from emulator_session import get

DISPUTES = "/disputes/v2/disputes"
TRANSACTIONS = "/settlements/v1/transactions"
ORDERS = "/ordermanagement/v1/orders"
USER, PASSWORD = "disputes", "disputes-secret"
HOUR, DAY = 3600, 86400
MID = {"x-klarna-basic-mid": "K123456"}
DATE_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
KRN_RE = re.compile(r"^krn:klarna:eu1:dispute:([a-z_]+):(\d+)$")
REASONS = {"goods_not_received", "return", "incorrect_invoice", "already_paid", "faulty_goods",
           "unauthorized_purchase", "high_risk_order"}
CLOSED = {"closed", "loss_accepted", "deadline_expired"}
KEYS = ["dispute_krn", "capture_id", "reason", "investigation_status", "status", "opened_at", "closed_at",
        "closing_reason", "closing_reason_detailed", "deadline_expires_at", "disputed_amount", "charged_disputes_fee",
        "chargeback_amount", "disputed_order_lines", "merchant", "region", "order", "requests"]
#: (closing_reason, closing_reason_detailed) -> (the merchant won, the row of the closing)
CLOSINGS = {("resolved", "resolved_in_favour_of_merchant"): (True, ("FEE_REFUND", "DISPUTE_FEE_REFUND")),
            ("resolved", "resolved_in_favour_of_customer"): (False, ("REVERSAL", "REVERSAL")),
            ("loss_accepted", "merchant_accepted_loss"): (False, ("REVERSAL", "REVERSAL")),
            ("deadline_expired", "merchant_did_not_reply_to_dispute_request"): (False, ("REVERSAL", "REVERSAL"))}
TOWARDS_MERCHANT = ("sale_amount", "release_amount", "credit_amount", "fee_refund_amount", "fee_correction_amount")
TOWARDS_KLARNA = ("fee_amount", "return_amount", "reversal_amount", "commission_amount", "tax_amount",
                  "holdback_amount", "charge_amount")
SPEC = DatasetSpec(seed=17, payouts=36, transactions_per_payout=15, disputes=24, purged_order_ratio=0.1,
                   empty_payouts=2, unreconciled_payouts=1)


def served(dataset, faults=None):
    return emulator_session.served(dataset, USER, PASSWORD, faults=faults, headers=MID)


def list_all(session, **params) -> tuple:
    """Every dispute of the list along pagination.next_page: (disputes, paginations)."""
    body = get(session, DISPUTES, **params)
    disputes, pages = list(body["disputes"]), [body["pagination"]]
    while "next_page" in body["pagination"]:
        body = get(session, DISPUTES, next_page=body["pagination"]["next_page"])
        disputes.extend(body["disputes"])
        pages.append(body["pagination"])
    return disputes, pages


def ts(value) -> float:
    return parse_datetime(value)


@pytest.fixture(scope="module")
def transaction_schema():
    with open(SETTLEMENTS_OPENAPI) as f:
        return jsonschema.Draft7Validator(yaml.safe_load(f)["components"]["schemas"]["Transaction"])


def check_dispute(ds, d, spec):
    """A dispute's fields, consistent with its order and its state."""
    assert list(d) == KEYS
    reason, number = KRN_RE.match(d["dispute_krn"]).groups()
    assert reason == d["reason"] in REASONS and int(number) > 0
    state = d["investigation_status"]
    closed = state in CLOSED
    assert d["status"] == ("closed" if closed else "open")
    for key in ("opened_at", "deadline_expires_at"):
        assert DATE_TIME_RE.match(d[key])
    assert ts(d["deadline_expires_at"]) == ts(d["opened_at"]) + 7 * DAY
    assert (d["closed_at"] is not None, d["closing_reason"] is not None, d["closing_reason_detailed"] is not None) \
        == (closed,) * 3
    currency = d["order"]["purchase_currency"]
    assert d["disputed_amount"]["currency"] == currency and d["disputed_amount"]["amount"] > 0
    fee = d["charged_disputes_fee"]
    assert fee is None or (fee["currency"] == currency and fee["amount"] > 0 and fee["amount"] % 100 == 0)
    request, = d["requests"]
    assert request["created_at"] == d["opened_at"] and request["attachments"] == []
    assert request["requested_fields"] and isinstance(request["optional_requested_fields"], list)
    assert d["merchant"] == {"merchant_id": spec.merchant_id, "name": "Emulator Shop"} and d["region"] == "EU"
    assert d["order"]["shipping_info"] == []
    if closed:
        assert DATE_TIME_RE.match(d["closed_at"]) and ts(d["closed_at"]) > ts(d["opened_at"])
        won, _ = CLOSINGS[(d["closing_reason"], d["closing_reason_detailed"])]
        assert (d["chargeback_amount"] is None) == won
        if not won:
            assert d["chargeback_amount"] == d["disputed_amount"]
        assert {"closed": "resolved", "loss_accepted": "loss_accepted",
                "deadline_expired": "deadline_expired"}[state] == d["closing_reason"]
        if state == "deadline_expired":
            assert d["closed_at"] == d["deadline_expires_at"]
    else:
        assert d["chargeback_amount"] is None
    replied = state == "replied" or (state == "closed")
    assert len(request["responses"]) == (1 if replied else 0)
    if replied:
        response, = request["responses"]
        assert response["attachments"] == [] and response["requested_fields"] == request["requested_fields"]
        assert ts(d["opened_at"]) < ts(response["created_at"]) < ts(d["deadline_expires_at"])
        if closed:
            assert ts(response["created_at"]) < ts(d["closed_at"])
    # the order it is about, as Order Management serves it (unless purged)
    order = ds.order(d["order"]["order_id"])
    if order is not None:
        for key in ("order_id", "created_at", "order_amount", "purchase_currency", "merchant_reference1",
                    "merchant_data"):
            assert d["order"][key] == order[key]
        assert d["order"]["merchant_reference2"] == order.get("merchant_reference2")
        capture, = [c for c in order["captures"] if c["capture_id"] == d["capture_id"]]
        assert d["disputed_amount"]["amount"] <= capture["captured_amount"]
        line, = d["disputed_order_lines"]
        assert any(line["reference"] == x["reference"] and 1 <= line["disputed_quantity"] <= x["quantity"]
                   for x in order["order_lines"])


def check_money(ds, d, transaction_schema) -> list:
    """The dispute's settlement rows: a fee at the opening, the closing's row, each in a payout of its currency
    dated after the event; -> the rows."""
    rows = ds.dispute_transactions(d["dispute_krn"])
    fee = d["charged_disputes_fee"]
    expected = []
    if fee is not None:
        expected.append(("FEE", "DISPUTE_FEE", fee["amount"], d["opened_at"]))
    if d["investigation_status"] in CLOSED:
        won, (kind, detailed) = CLOSINGS[(d["closing_reason"], d["closing_reason_detailed"])]
        if not won:
            expected.append((kind, detailed, d["chargeback_amount"]["amount"], d["closed_at"]))
        elif fee is not None:
            expected.append((kind, detailed, fee["amount"], d["closed_at"]))
    assert [(r["type"], r["detailed_type"], r["amount"]) for r in rows] == [e[:3] for e in expected]
    for row, (_, _, _, event_at) in zip(rows, expected):
        payout = ds.payout(row["payment_reference"])
        assert ts(payout["payout_date"]) > ts(event_at), "money lands in a payout dated after the event"
        assert row["reversal_reference"] == d["dispute_krn"] and row["order_id"] == d["order"]["order_id"]
        assert row["capture_id"] == d["capture_id"]
        assert row["currency_code"] == payout["currency_code"] == d["disputed_amount"]["currency"]
        assert not list(transaction_schema.iter_errors(row))
    return rows


def reconcile(ds) -> dict:
    offsets = {}
    for p in ds.payouts():
        sums = dict.fromkeys(TOTALS_BY_TYPE, 0)
        for row in ds.transactions_for(p["payment_reference"]):
            (key,) = [k for k, types in TOTALS_BY_TYPE.items() if row["type"] in types]
            sums[key] += row["amount"]
        assert all(p["totals"][k] == v for k, v in sums.items())
        offsets[p["payment_reference"]] = p["totals"]["settlement_amount"] - (
            sum(sums[k] for k in TOWARDS_MERCHANT) - sum(sums[k] for k in TOWARDS_KLARNA))
    return offsets


# --------------------------------------------------------------------------- initial disputes

def test_initial_disputes_have_every_field_a_mix_of_states_and_their_money(transaction_schema):
    ds = Dataset(SPEC)
    disputes = ds.disputes()
    assert len(disputes) == ds.dispute_count == SPEC.disputes
    assert len({d["dispute_krn"] for d in disputes}) == len(disputes)
    states = collections.Counter(d["investigation_status"] for d in disputes)
    assert set(states) == {"opened", "replied", "closed", "loss_accepted", "deadline_expired"}, states
    closings = collections.Counter((d["closing_reason"], d["closing_reason_detailed"]) for d in disputes
                                   if d["closing_reason"])
    assert set(closings) == set(CLOSINGS), closings  # won, lost, accepted and expired
    assert any(d["charged_disputes_fee"] is None for d in disputes) and \
        any(d["charged_disputes_fee"] is not None for d in disputes)
    assert len({d["order"]["purchase_currency"] for d in disputes}) == 3
    newest = max(ts(p["payout_date"]) for p in ds.payouts())
    dispute_rows = []
    for d in disputes:
        check_dispute(ds, d, SPEC)
        assert ds.dispute(d["dispute_krn"]) == d
        dispute_rows += check_money(ds, d, transaction_schema)
        events = [d["opened_at"], d["closed_at"]] + [r["created_at"] for r in d["requests"][0]["responses"]]
        assert all(ts(e) <= newest - HOUR for e in events if e), "the history lies in the past"
        if d["investigation_status"] == "opened":
            assert ts(d["deadline_expires_at"]) > newest, "an open request has not expired yet"
        assert not ds.is_purged(d["order"]["order_id"])
    assert len({d["order"]["order_id"] for d in disputes}) == len(disputes)
    # every row naming a dispute is one of its rows: the row plan's own REVERSALs name other references
    krns = {d["dispute_krn"] for d in disputes}
    named = [r for r in ds.transactions() if r.get("reversal_reference") in krns]
    assert sorted(map(repr, named)) == sorted(map(repr, dispute_rows))
    # the payouts still reconcile (the unreconciled one by +100), empty payouts stay empty
    offsets = reconcile(ds)
    assert {ref for ref, off in offsets.items() if off} == set(ds.unreconciled_payment_references())
    empty = [p for p in ds.payouts() if p["totals"]["sale_amount"] == 0]
    assert len(empty) == SPEC.empty_payouts and all(not ds.transactions_for(p["payment_reference"]) for p in empty)
    # a dispute's rows come after the payout's own rows; the other payouts are as without disputes
    plain = Dataset(DatasetSpec(**{**SPEC.__dict__, "disputes": 0}))
    for p in plain.payouts():
        ref = p["payment_reference"]
        own = plain.transactions_for(ref)
        rows = ds.transactions_for(ref)
        assert rows[:len(own)] == own and all(r["reversal_reference"] in krns for r in rows[len(own):])
        if len(rows) == len(own):
            assert ds.payout(ref) == p
    assert list(plain.orders()) == list(ds.orders())


def test_small_datasets_fall_back_to_states_their_payouts_can_hold(transaction_schema):
    for spec in (DatasetSpec(seed=2, payouts=3, transactions_per_payout=6, disputes=6),
                 DatasetSpec(seed=3, payouts=1, transactions_per_payout=4, disputes=3, currencies=("SEK",)),
                 DatasetSpec(seed=4, payouts=4, transactions_per_payout=2, disputes=9, currencies=("EUR",),
                             purged_order_ratio=1.0)):
        ds = Dataset(spec)
        assert len(ds.disputes()) == spec.disputes
        for d in ds.disputes():
            check_dispute(ds, d, spec)
            check_money(ds, d, transaction_schema)
        assert not set(reconcile(ds).values()) - {0}
    single = Dataset(DatasetSpec(seed=3, payouts=1, transactions_per_payout=4, disputes=3, currencies=("SEK",)))
    assert {d["investigation_status"] for d in single.disputes()} == {"opened"}
    assert all(d["charged_disputes_fee"] is None for d in single.disputes()), "no payout to charge a fee in"
    with pytest.raises(ValueError, match="disputes"):
        DatasetSpec(payouts=2, empty_payouts=2, disputes=1)
    with pytest.raises(ValueError, match="disputes"):
        DatasetSpec(disputes=-1)


# --------------------------------------------------------------------------- growth

def moves(before: dict, after: dict) -> dict:
    return {k: (before[k]["investigation_status"], after[k]["investigation_status"]) for k in before
            if before[k]["investigation_status"] != after[k]["investigation_status"]}


def test_each_step_with_a_new_payout_moves_every_open_dispute_one_state_on(transaction_schema):
    spec = DatasetSpec(seed=6, payouts=20, transactions_per_payout=12, disputes=18, currencies=("EUR",))
    ds = Dataset(spec)
    seen = collections.Counter()
    for step in range(12):
        before = {d["dispute_krn"]: d for d in ds.disputes()}
        if step == 3:  # late payouts alone move nothing
            ds.grow(late_payouts=2)
            assert ds.disputes() == list(before.values()) and ds.step_events()[-1]["moved_disputes"] == []
            continue
        first = ds.grow(new_payouts=1, new_disputes=8 if step == 0 else 0)[0]
        tau = ts(first["payout_date"]) - HOUR
        after = {d["dispute_krn"]: d for d in ds.disputes()}
        assert len(after) == len(before) + (8 if step == 0 else 0)
        moved = moves(before, after)
        assert moved == {m["dispute_krn"]: (before[m["dispute_krn"]]["investigation_status"],
                                           m["investigation_status"]) for m in ds.step_events()[-1]["moved_disputes"]}
        for krn, d in before.items():
            old, new = d["investigation_status"], after[krn]["investigation_status"]
            if old in CLOSED:
                assert after[krn] == d, "closed disputes never change"
            elif old == "replied":
                assert new == "closed" and ts(after[krn]["closed_at"]) == tau
            elif new == "opened":  # only an expiry waits (for its deadline)
                assert tau < ts(d["deadline_expires_at"])
            else:
                assert new in ("replied", "loss_accepted", "deadline_expired")
                at = after[krn]["closed_at"] or after[krn]["requests"][0]["responses"][0]["created_at"]
                if new == "deadline_expired":
                    assert at == d["deadline_expires_at"] and tau >= ts(at)
                else:
                    assert ts(at) == min(tau, ts(d["deadline_expires_at"]) - HOUR)
            if new != old:
                seen[(old, new)] += 1
                check_dispute(ds, after[krn], spec)
                rows = check_money(ds, after[krn], transaction_schema)
                if new in CLOSED and rows and rows[-1]["type"] != "FEE":
                    assert rows[-1]["payment_reference"] == first["payment_reference"]
        assert not set(reconcile(ds).values()) - {0}
    assert set(seen) == {("opened", "replied"), ("replied", "closed"), ("opened", "loss_accepted"),
                         ("opened", "deadline_expired")}, seen
    assert all(d["status"] == "closed" for d in ds.disputes()), "a dozen days close them all"
    replay = Dataset(spec, growth=ds.growth)
    assert replay.disputes() == ds.disputes() and list(replay.transactions()) == list(ds.transactions())


def test_money_of_a_move_waits_for_a_new_payout_of_the_disputes_currency(transaction_schema):
    spec = DatasetSpec(seed=9, payouts=30, transactions_per_payout=12, disputes=24)
    ds = Dataset(spec)
    before = {d["dispute_krn"]: d for d in ds.disputes()}
    first = ds.grow(new_payouts=1)[0]  # one new payout: one currency
    after = {d["dispute_krn"]: d for d in ds.disputes()}
    waited = 0
    for krn, d in before.items():
        new = after[krn]
        currency = d["disputed_amount"]["currency"]
        if d["investigation_status"] == "replied":
            charges = not (new["closing_reason_detailed"] == "resolved_in_favour_of_merchant"
                           and d["charged_disputes_fee"] is None)
            if currency != first["currency_code"]:
                if new["investigation_status"] == "replied":
                    waited += 1
                else:  # a won dispute without a fee moves no money and needs no payout
                    assert new["closing_reason_detailed"] == "resolved_in_favour_of_merchant"
                    assert d["charged_disputes_fee"] is None and not ds.dispute_transactions(krn)
            else:
                assert new["investigation_status"] == "closed"
                if charges:
                    assert check_money(ds, new, transaction_schema)[-1]["payment_reference"] == \
                        first["payment_reference"]
    assert waited, "some dispute waited for a payout of its currency"
    replies = [k for k, d in before.items() if d["investigation_status"] == "opened" and
               after[k]["investigation_status"] == "replied"]
    assert {before[k]["disputed_amount"]["currency"] for k in replies} - {first["currency_code"]}, \
        "replies need no payout: disputes of every currency reply"
    # a step with a payout of every currency closes every replied one
    ds.grow(new_payouts=3)
    assert "replied" not in {d["investigation_status"] for d in ds.disputes()}
    assert not set(reconcile(ds).values()) - {0}


def test_new_disputes_open_on_paid_out_orders_with_their_fee_in_the_first_new_payout(transaction_schema):
    spec = DatasetSpec(seed=12, payouts=9, transactions_per_payout=12, purged_order_ratio=0.2)
    ds = Dataset(spec)
    assert ds.disputes() == []
    before_refs = {p["payment_reference"] for p in ds.payouts()}
    first = ds.grow(new_payouts=2, new_disputes=4)[0]
    opened = ds.step_events()[0]["opened_disputes"]
    assert [d["dispute_krn"] for d in ds.disputes()] == opened and len(opened) == 4
    tau = ts(first["payout_date"]) - HOUR
    for d in ds.disputes():
        check_dispute(ds, d, spec)
        assert d["investigation_status"] == "opened" and ts(d["opened_at"]) == tau
        assert d["order"]["purchase_currency"] == first["currency_code"]
        rows = [json.loads(b) for b in ds.transactions_page(order_id=d["order"]["order_id"], size=500)[0]]
        assert {r["payment_reference"] for r in rows} & before_refs, "the order was paid out before the step"
        rows = check_money(ds, d, transaction_schema)
        assert all(r["payment_reference"] == first["payment_reference"] for r in rows)
    assert len({d["order"]["order_id"] for d in ds.disputes()}) == 4
    assert not set(reconcile(ds).values()) - {0}
    ds.grow(new_payouts=1)
    assert {d["investigation_status"] for d in ds.disputes()} <= {"replied", "loss_accepted", "opened"}


# --------------------------------------------------------------------------- the API

def test_list_pages_with_next_page_sorts_and_filters():
    ds = Dataset(SPEC)
    expected = ds.disputes()
    by_krn = {d["dispute_krn"]: d for d in expected}
    with served(Dataset(SPEC)) as s:
        body = get(s, DISPUTES)
        assert body["pagination"] == {"limit": 250, "count": 24, "total": 24} and body["disputes"] == \
            sorted(expected, key=lambda d: ts(d["opened_at"]))
        listed, pages = list_all(s, limit=7)
        assert listed == body["disputes"]
        assert [p["count"] for p in pages] == [7, 7, 7, 3] and all(p["total"] == 24 and p["limit"] == 7
                                                                   for p in pages)
        assert "next_page" not in pages[-1] and all(len(p["next_page"]) == 1 for p in pages[:-1])
        assert list_all(s, limit=8)[1][-1] == {"limit": 8, "count": 8, "total": 24}
        for sort, key, reverse in (("opened_at", "opened_at", False), ("-opened_at", "opened_at", True),
                                   ("deadline_expires_at", "deadline_expires_at", False),
                                   ("-deadline_expires_at", "deadline_expires_at", True)):
            got = [d["dispute_krn"] for d in list_all(s, sort_by=sort, limit=5)[0]]
            keys = [ts(by_krn[k][key]) for k in got]
            assert keys == sorted(keys, reverse=reverse) and sorted(got) == sorted(by_krn)
        # several sort_by sort in turn
        two = list_all(s, sort_by=["-deadline_expires_at", "opened_at"], limit=4)[0]
        assert [d["dispute_krn"] for d in two] == [d["dispute_krn"] for d in sorted(
            expected, key=lambda d: (-ts(d["deadline_expires_at"]), ts(d["opened_at"])))]
        # filters, repeatable; the cursor keeps them
        want = [d for d in body["disputes"] if d["investigation_status"] in ("opened", "closed")]
        got, pages = list_all(s, investigation_status=["opened", "closed"], limit=3)
        assert got == want and pages[0]["total"] == len(want)
        reason = expected[0]["reason"]
        assert list_all(s, reason=reason)[0] == [d for d in body["disputes"] if d["reason"] == reason]
        orders = [expected[0]["order"]["order_id"], expected[5]["order"]["order_id"]]
        assert {d["order"]["order_id"] for d in get(s, DISPUTES, order_id=orders)["disputes"]} == set(orders)
        ref1 = expected[2]["order"]["merchant_reference1"]
        assert [d["order"]["merchant_reference1"] for d in get(s, DISPUTES, merchant_references1=ref1)["disputes"]] \
            == [ref1]
        assert get(s, DISPUTES, merchant_id="K123456")["pagination"]["total"] == 24
        assert get(s, DISPUTES, merchant_id="K999")["pagination"] == {"limit": 250, "count": 0, "total": 0}
        assert get(s, DISPUTES, reason="pandemic_impact")["disputes"] == []
        assert get(s, DISPUTES, order_id="")["pagination"]["total"] == 24, "empty values are ignored"
        # 400s
        for params in ({"limit": 0}, {"limit": 251}, {"limit": "x"}, {"sort_by": "closed_at"},
                       {"investigation_status": "lost"}, {"reason": "fraud"}, {"next_page": "bm9wZQ"},
                       {"next_page": ["a", "b"]}):
            resp = s.get(s.base + DISPUTES, params=params, timeout=10)
            assert resp.status_code == 400 and resp.json()["error_code"] == "BAD_REQUEST", (params, resp.text)
            assert "check query parameters" in resp.json()["error_messages"][0]
        # growth between two pages: the new disputes come after the cursor, none twice
        first = get(s, DISPUTES, limit=10)
        resp = s.post(s.base + "/_emulator/grow", json={"new_payouts": 3, "new_disputes": 2}, timeout=10)
        assert resp.status_code == 200
        rest, _ = list_all(s, next_page=first["pagination"]["next_page"])
        krns = [d["dispute_krn"] for d in first["disputes"] + rest]
        assert len(krns) == len(set(krns)) == 26 and krns[-2:] == resp.json()["events"]["opened_disputes"]
        # with the cursor a limit given again wins
        assert get(s, DISPUTES, next_page=first["pagination"]["next_page"], limit=2)["pagination"]["count"] == 2


def test_single_dispute_and_the_access_checks():
    ds = Dataset(SPEC)
    d = ds.disputes()[3]
    with served(Dataset(SPEC)) as s:
        for path in (quote(d["dispute_krn"], safe=""), d["dispute_krn"]):
            resp = s.get(f"{s.base}{DISPUTES}/{path}", timeout=10)
            assert resp.status_code == 200 and resp.json() == d
            assert resp.content == ds.dispute_json(d["dispute_krn"])
        resp = s.get(f"{s.base}{DISPUTES}/{quote('krn:klarna:eu1:dispute:return:1', safe='')}", timeout=10)
        assert resp.status_code == 404 and resp.json()["error_code"] == "NOT_FOUND"
        assert "Dispute not found" in resp.json()["error_messages"][0]
        for path in (DISPUTES, f"{DISPUTES}/{quote(d['dispute_krn'], safe='')}"):
            url = s.base + path
            resp = requests.get(url, auth=(USER, "wrong"), headers=MID, timeout=10)
            assert resp.status_code == 401
            resp = requests.get(url, auth=(USER, PASSWORD), timeout=10)
            assert resp.status_code == 403 and resp.json()["error_code"] == "FORBIDDEN"
            assert "x-klarna-basic-mid" in resp.json()["error_messages"][0]
            resp = requests.get(url, auth=(USER, PASSWORD), headers={"X-Klarna-Basic-Mid": "K999"}, timeout=10)
            assert resp.status_code == 403 and resp.json()["error_code"] == "FORBIDDEN"
            assert re.fullmatch(r"[0-9a-f-]{36}", resp.json()["correlation_id"])
            assert resp.headers["Klarna-Correlation-Id"] == resp.json()["correlation_id"]
            assert resp.headers["X-Ratelimit-Limit"] == "200, 200;w=1"
        # not onboarded: 403 on every disputes request, the other endpoints as usual
        assert s.post(s.base + "/_emulator/faults", json={"disputes_enrolled": False}, timeout=10).status_code == 200
        for path in (DISPUTES, f"{DISPUTES}/{quote(d['dispute_krn'], safe='')}"):
            resp = s.get(s.base + path, timeout=10)
            assert resp.status_code == 403 and resp.json()["error_code"] == "MERCHANT_NOT_ENROLLED"
        assert s.get(s.base + TRANSACTIONS, timeout=10).status_code == 200
        assert s.get(s.base + "/_emulator/faults", timeout=10).json()["disputes_enrolled"] is False
        s.post(s.base + "/_emulator/faults", json={}, timeout=10)
        assert s.get(s.base + DISPUTES, timeout=10).status_code == 200
        log = s.get(s.base + "/_emulator/requests", timeout=10).json()
        assert {e["endpoint"] for e in log if e["path"].startswith(DISPUTES)} == {"disputes"}
        assert s.get(s.base + "/_emulator/stats", timeout=10).json()["by_endpoint"]["disputes"] >= 10


def test_disputes_take_every_fault_knob():
    with served(Dataset(DatasetSpec(payouts=6, transactions_per_payout=6, disputes=4))) as s:
        one = f"{DISPUTES}/{quote(s.get(s.base + DISPUTES).json()['disputes'][0]['dispute_krn'], safe='')}"

        def knobs(**k):
            s.state.faults.set(FaultConfig(**k))

        knobs(endpoint_faults={"disputes": "not_found"})
        assert s.get(s.base + DISPUTES).status_code == 404 and s.get(s.base + one).status_code == 404
        assert s.get(s.base + TRANSACTIONS).status_code == 200
        knobs(endpoint_faults={"disputes": "no_pagination"})
        assert set(s.get(s.base + DISPUTES).json()) == {"disputes"}
        assert "dispute_krn" in s.get(s.base + one).json(), "a single dispute is no collection"
        knobs(endpoint_faults={"disputes": "null_items"})
        body = s.get(s.base + DISPUTES).json()
        assert body["disputes"] is None and body["pagination"]["total"] == 4
        knobs(endpoint_faults={"disputes": "bad_request"})
        resp = s.get(s.base + DISPUTES)
        assert resp.status_code == 400 and resp.json()["error_messages"] == ["limit: must be an integer between 1 "
                                                                             "and 250"]
        knobs(endpoint_faults={"disputes": "forbidden"}, disputes_enrolled=False)
        assert s.get(s.base + DISPUTES).json()["error_code"] == "FORBIDDEN", "faults come before the checks"
        knobs(rate_limit_rps=2)
        codes = [s.get(s.base + DISPUTES).status_code for _ in range(6)]
        assert codes[:2] == [200, 200] and 429 in codes
        knobs(fail_requests={s.state.stats()["request_number"] + 1: "error_500"})
        assert s.get(s.base + DISPUTES).status_code == 500
        knobs()
        assert s.get(s.base + DISPUTES, headers={"x-klarna-basic-mid": ""}).status_code == 403
    with pytest.raises(ValueError, match="unknown endpoint"):
        FaultConfig(endpoint_faults={"dispute": "not_found"})
    assert FaultConfig().disputes_enrolled is True


def test_subprocess_flags_and_client():
    spec = DatasetSpec(seed=5, payouts=9, transactions_per_payout=8, disputes=6)
    args = spec.to_cli_args()
    assert args[args.index("--disputes") + 1] == "6"
    parsed = build_parser().parse_args(["--disputes", "4", "--disputes-not-enrolled"])
    assert parsed.disputes == 4 and parsed.disputes_not_enrolled
    assert not build_parser().parse_args([]).disputes_not_enrolled and DatasetSpec().disputes == 0
    with KlarnaEmulator(spec, disputes_enrolled=False, endpoint_faults={"disputes": "slow"}, slow_seconds=0) as emu, \
            requests.Session() as s:
        s.auth = emu.auth
        assert emu.faults()["disputes_enrolled"] is False and emu.faults()["endpoint_faults"] == {"disputes": "slow"}
        resp = s.get(emu.url + DISPUTES, headers=emu.dispute_headers(), timeout=10)
        assert resp.status_code == 403 and resp.json()["error_code"] == "MERCHANT_NOT_ENROLLED"
        emu.set_faults()
        body = s.get(emu.url + DISPUTES, headers=emu.dispute_headers(), timeout=10).json()
        assert sorted(body["disputes"], key=lambda d: d["dispute_krn"]) == \
            sorted(emu.dataset.disputes(), key=lambda d: d["dispute_krn"])
        assert emu.health()["disputes"] == 6 and s.get(emu.url + "/_emulator/spec").json()["spec"]["disputes"] == 6
        emu.grow(new_payouts=2, new_disputes=1)
        body = s.get(emu.url + DISPUTES, headers=emu.dispute_headers(), timeout=10).json()
        assert body["pagination"]["total"] == 7 and body["disputes"][-1] == emu.dataset.disputes()[-1]
        rows = s.get(emu.url + TRANSACTIONS, params={"size": 500}, timeout=10).json()["transactions"]
        assert rows == list(emu.dataset.transactions())
