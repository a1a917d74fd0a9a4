"""Growth events: refunds on orders already paid out and orders that are gone (404) from a growth step on,
through the in-process ``Dataset`` and a real HTTP server started in this process.

Run from the repository root: `.venv/bin/pytest -q emulator/tests/test_growth_events.py`.
"""
from __future__ import annotations

import json

import jsonschema
import pytest
import requests
import yaml

from klarna_emulator import Dataset, DatasetSpec, KlarnaEmulator
from klarna_emulator.__main__ import build_parser
from klarna_emulator.dataset import TOTALS_BY_TYPE, parse_datetime
from reference import SETTLEMENTS_OPENAPI

import emulator_session
from emulator_session import get

PAYOUTS = "/settlements/v1/payouts"
TRANSACTIONS = "/settlements/v1/transactions"
ORDERS = "/ordermanagement/v1/orders"
USER, PASSWORD = "events", "events-secret"
HOUR = 3600
#: the sign convention documented in klarna_emulator/transactions.py, written out independently
TOWARDS_MERCHANT = ("sale_amount", "release_amount", "credit_amount", "fee_refund_amount", "fee_correction_amount")
TOWARDS_KLARNA = ("fee_amount", "return_amount", "reversal_amount", "commission_amount", "tax_amount",
                  "holdback_amount", "charge_amount")
SPEC = DatasetSpec(seed=21, payouts=12, transactions_per_payout=15, currencies=("EUR", "SEK"),
                   purged_order_ratio=0.2)
#: order fields a refund changes
REFUND_FIELDS = ("refunded_amount", "refunds", "captures")


def served(dataset):
    return emulator_session.served(dataset, USER, PASSWORD)


def walk(session, **params) -> list:
    body = get(session, TRANSACTIONS, size=97, **params)
    rows = list(body["transactions"])
    while body["pagination"].get("next"):
        body = session.get(body["pagination"]["next"], timeout=10).json()
        rows.extend(body["transactions"])
    return rows


def grow(session, **counts) -> dict:
    resp = session.post(session.base + "/_emulator/grow", json=counts, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def transaction_schema():
    with open(SETTLEMENTS_OPENAPI) as f:
        return jsonschema.Draft7Validator(yaml.safe_load(f)["components"]["schemas"]["Transaction"])


def reconcile(ds) -> dict:
    """payment_reference -> served settlement_amount minus the signed sum of its rows; every other total must
    match its rows exactly and every row is in the payout's currency."""
    offsets = {}
    for p in ds.payouts():
        rows = ds.transactions_for(p["payment_reference"])
        sums = dict.fromkeys(TOTALS_BY_TYPE, 0)
        for row in rows:
            assert row["amount"] > 0 and row["currency_code"] == p["currency_code"]
            (key,) = [k for k, types in TOTALS_BY_TYPE.items() if row["type"] in types]
            sums[key] += row["amount"]
        for key, value in sums.items():
            assert p["totals"][key] == value, (p["payment_reference"], key)
        signed = sum(sums[k] for k in TOWARDS_MERCHANT) - sum(sums[k] for k in TOWARDS_KLARNA)
        offsets[p["payment_reference"]] = p["totals"]["settlement_amount"] - signed
    return offsets


def home_payout(ds, order_id, before_refs) -> dict:
    """The payout among ``before_refs`` whose own rows name the order."""
    (ref,) = [ref for ref in before_refs if any(r["order_id"] == order_id for r in ds.transactions_for(ref))]
    return ds.payout(ref)


# --------------------------------------------------------------------------- refunds on old orders

def test_refunds_on_old_orders_add_a_refund_to_the_order_and_a_return_row_to_the_new_payout(transaction_schema):
    mirror = Dataset(SPEC)
    with served(Dataset(SPEC)) as s:
        before_refs = [p["payment_reference"] for p in mirror.payouts()]
        before_orders = {o["order_id"]: o for o in mirror.orders()}
        answer = grow(s, new_payouts=2, refunds_on_old_orders=3)
        added = mirror.grow(new_payouts=2, refunds_on_old_orders=3)
        assert answer["added"] == [p["payment_reference"] for p in added]
        assert answer["growth"] == [[2, 0, 3]] and mirror.growth == [(2, 0, 3)]
        assert answer["events"] == mirror.step_events()[0]
        first = added[0]
        refunded = answer["events"]["refunded_orders"]
        assert len(refunded) == len(set(refunded)) == 3
        first_rows = mirror.transactions_for(first["payment_reference"])
        assert len(first_rows) == SPEC.transactions_per_payout + 3
        returns = first_rows[SPEC.transactions_per_payout:]  # after the payout's own rows, in draw order
        assert [r["order_id"] for r in returns] == refunded
        tau = parse_datetime(first["payout_date"]) - HOUR
        for order_id, row in zip(refunded, returns):
            old = before_orders[order_id]
            served_order = get(s, f"{ORDERS}/{order_id}")
            assert served_order == mirror.order(order_id)
            assert {k: v for k, v in served_order.items() if k not in REFUND_FIELDS} == \
                {k: v for k, v in old.items() if k not in REFUND_FIELDS}
            assert served_order["refunds"][:-1] == old["refunds"]
            new = served_order["refunds"][-1]
            assert list(new)[:4] == ["refund_id", "refunded_amount", "refunded_at", "description"]
            assert new["description"] == "The item was returned and the order refunded."
            assert parse_datetime(new["refunded_at"]) == tau
            assert served_order["refunded_amount"] == old["refunded_amount"] + new["refunded_amount"]
            assert served_order["refunded_amount"] <= served_order["captured_amount"]
            assert sum(c["refunded_amount"] for c in served_order["captures"]) == served_order["refunded_amount"]
            assert [{k: v for k, v in c.items() if k != "refunded_amount"} for c in served_order["captures"]] == \
                [{k: v for k, v in c.items() if k != "refunded_amount"} for c in old["captures"]]
            assert new["refunded_amount"] >= 100 or new["refunded_amount"] == old["captured_amount"] - \
                old["refunded_amount"]
            # the RETURN row settles exactly that refund, in the payout's (= the order's) currency
            assert (row["type"], row["detailed_type"], row["refund_id"], row["amount"]) == \
                ("RETURN", "PURCHASE_RETURN", new["refund_id"], new["refunded_amount"])
            assert row["capture_date"] == new["refunded_at"] and row["capture_id"] == ""
            assert row["currency_code"] == first["currency_code"] == served_order["purchase_currency"]
            assert row.get("merchant_refund_reference") == new.get("reference")
            assert not list(transaction_schema.iter_errors(row))
            # the order was paid out before the step, and /transactions?order_id= finds both payouts
            home = home_payout(mirror, order_id, before_refs)
            assert home["currency_code"] == first["currency_code"]
            by_order = get(s, TRANSACTIONS, order_id=order_id, size=500)["transactions"]
            assert by_order[-1] == row and by_order[:-1] == [
                r for r in mirror.transactions_for(home["payment_reference"]) if r["order_id"] == order_id]
            only_new = get(s, TRANSACTIONS, order_id=order_id, payment_reference=first["payment_reference"])
            assert only_new["transactions"] == [row] and only_new["pagination"]["total"] == 1
        assert not set(reconcile(mirror).values()) - {0}
        assert walk(s) == list(mirror.transactions())
        assert [o for o in mirror.orders()] == [get(s, f"{ORDERS}/{o}") for o in mirror.order_ids(False)]

        # a later step refunds other orders while some are left
        mirror.grow(new_payouts=1, refunds_on_old_orders=2)
        again = mirror.step_events()[1]["refunded_orders"]
        assert len(again) == 2 and not set(again) & set(refunded)
        # asked for more refunds than orders never refunded can take, a step refunds an order again
        twice = Dataset(DatasetSpec(seed=5, payouts=2, transactions_per_payout=10, currencies=("EUR",)),
                        growth=[(1, 0, 2)])
        earlier = {o: twice.order(o) for o in twice.step_events()[0]["refunded_orders"]}
        eligible = [o["order_id"] for o in twice.orders() if o["captured_amount"] - o["refunded_amount"] >= 100]
        fresh = [o for o in eligible if o not in earlier]
        assert set(eligible) - set(fresh), "an order refunded once can take another refund"
        twice.grow(1, 0, len(fresh) + 1)
        refunded_now = twice.step_events()[1]["refunded_orders"]
        assert refunded_now[:len(fresh)] == [o for o in refunded_now if o in fresh] and set(fresh) <= set(refunded_now)
        (again_id,) = set(refunded_now) & set(earlier)
        order = twice.order(again_id)
        assert order["refunds"][:-1] == earlier[again_id]["refunds"] and len(order["refunds"]) >= 2
        assert order["refunded_amount"] == sum(r["refunded_amount"] for r in order["refunds"])


# --------------------------------------------------------------------------- gone orders

def test_gone_orders_answer_404_and_a_servicing_fee_names_them(transaction_schema):
    mirror = Dataset(SPEC)
    with served(Dataset(SPEC)) as s:
        before_refs = [p["payment_reference"] for p in mirror.payouts()]
        answer = grow(s, new_payouts=1, late_payouts=1, gone_orders=2)
        added = mirror.grow(1, 1, 0, 2)
        first = added[0]
        gone = answer["events"]["gone_orders"]
        assert len(gone) == 2 and gone == mirror.gone_order_ids()
        fees = mirror.transactions_for(first["payment_reference"])[SPEC.transactions_per_payout:]
        assert [r["order_id"] for r in fees] == gone
        for order_id, row in zip(gone, fees):
            resp = s.get(f"{s.base}{ORDERS}/{order_id}", timeout=10)
            assert resp.status_code == 404 and resp.json()["error_code"] == "NO_SUCH_ORDER"
            assert mirror.is_gone(order_id) and mirror.order(order_id) is None and not mirror.is_purged(order_id)
            assert (row["type"], row["detailed_type"]) == ("FEE", "SERVICING_FEE") and 50 <= row["amount"] < 500
            assert row["currency_code"] == first["currency_code"] == \
                home_payout(mirror, order_id, before_refs)["currency_code"]
            assert not list(transaction_schema.iter_errors(row))
            assert get(s, TRANSACTIONS, order_id=order_id, size=500)["transactions"][-1] == row
        assert not set(gone) & {o["order_id"] for o in mirror.orders()}
        assert set(gone) <= set(mirror.order_ids()) and not set(gone) & set(mirror.order_ids(include_purged=False))
        assert not set(reconcile(mirror).values()) - {0}
        # gone orders stay gone and are never drawn again, for any event
        mirror.grow(new_payouts=2, refunds_on_old_orders=3, gone_orders=3, new_disputes=2)
        step = mirror.step_events()[1]
        assert not set(gone) & (set(step["refunded_orders"]) | set(step["gone_orders"]))
        assert not set(gone) & {d["order"]["order_id"] for d in mirror.disputes()}
        assert all(mirror.order(o) is None for o in gone + step["gone_orders"])


# --------------------------------------------------------------------------- validation and step forms

def test_growth_events_need_a_new_payout_and_enough_orders():
    ds = Dataset(SPEC)
    before = (ds.payouts(), list(ds.transactions()), ds.growth)
    for counts in ({"refunds_on_old_orders": 1}, {"late_payouts": 2, "gone_orders": 1}, {"new_disputes": 1}):
        with pytest.raises(ValueError, match="new_payouts >= 1"):
            ds.grow(**counts)
    with pytest.raises(ValueError, match=">= 0"):
        ds.grow(1, 0, -1)
    with pytest.raises(ValueError, match="gone_orders=10000: only"):
        ds.grow(new_payouts=1, gone_orders=10_000)
    with pytest.raises(ValueError, match="refunds_on_old_orders"):
        ds.grow(new_payouts=1, refunds_on_old_orders=10_000)
    assert (ds.payouts(), list(ds.transactions()), ds.growth) == before  # nothing changed
    with pytest.raises(ValueError, match="only 0 orders"):  # no payouts before the step
        Dataset(DatasetSpec(payouts=0)).grow(new_payouts=1, gone_orders=1)
    with served(Dataset(SPEC)) as s:
        for body in ({"new_payouts": 0, "gone_orders": 1}, {"new_payouts": 1, "gone_orders": 10_000},
                     {"new_payouts": 1, "nope": 1}):
            resp = s.post(s.base + "/_emulator/grow", json=body, timeout=10)
            assert resp.status_code == 400 and resp.json()["error_code"] == "BAD_REQUEST", resp.text
        assert get(s, "/_emulator/health")["growth"] == []


def test_growth_steps_replay_from_lists_tuples_and_dicts():
    steps = [[2, 1], (3, 0, 1, 1, 1), {"new_payouts": 1, "gone_orders": 1}, (0, 2), [1, 0, 0, 0, 0]]
    a = Dataset(SPEC, growth=steps)
    b = Dataset(SPEC)
    b.grow(2, 1)
    b.grow(3, 0, 1, 1, 1)
    b.grow(new_payouts=1, gone_orders=1)
    b.grow(0, 2)
    b.grow(1)
    assert a.growth == b.growth == [(2, 1), (3, 0, 1, 1, 1), (1, 0, 0, 1), (0, 2), (1, 0)]
    c = Dataset(SPEC, growth=json.loads(json.dumps(a.growth)))  # as a demo saves and replays them
    for ds in (b, c):
        assert ds.payouts() == a.payouts() and list(ds.transactions()) == list(a.transactions())
        assert list(ds.orders()) == list(a.orders()) and ds.disputes() == a.disputes()
        assert ds.step_events() == a.step_events() and ds.gone_order_ids() == a.gone_order_ids()
    other = Dataset(DatasetSpec(**{**SPEC.__dict__, "seed": SPEC.seed + 1}), growth=steps)
    assert other.step_events()[1]["refunded_orders"] != a.step_events()[1]["refunded_orders"]

    parse = build_parser().parse_args
    assert parse(["--grow", "2", "--grow", "2:1", "--grow", "3:0:1:1:1", "--grow", "1::2"]).grow == \
        [(2, 0), (2, 1), (3, 0, 1, 1, 1), (1, 0, 2)]
    for bad in ("1:2:3:4:5:6", "x:1"):
        with pytest.raises(SystemExit):
            parse(["--grow", bad])


def test_cli_grow_with_events_and_the_client_mirror():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "klarna_emulator", "--payouts", "0", "--grow", "1:0:0:1"],
                         capture_output=True, timeout=20)
    assert res.returncode == 2 and b"gone_orders" in res.stderr and res.stdout == b""
    spec = DatasetSpec(seed=4, payouts=6, transactions_per_payout=8, currencies=("USD",), disputes=3)
    with KlarnaEmulator(spec) as emu, requests.Session() as s:
        s.auth = emu.auth
        refs = emu.grow(new_payouts=2, refunds_on_old_orders=1, gone_orders=1, new_disputes=1)
        assert emu.health()["growth"] == [[2, 0, 1, 1, 1]] and emu.health()["disputes"] == 4
        body = s.get(emu.url + TRANSACTIONS, params={"size": 500}, timeout=10).json()
        assert body["transactions"] == list(emu.dataset.transactions())
        assert s.get(emu.url + f"{PAYOUTS}/{refs[0]}", timeout=10).json() == emu.dataset.payout(refs[0])
        (gone,) = emu.dataset.gone_order_ids()
        assert s.get(emu.url + f"{ORDERS}/{gone}", timeout=10).status_code == 404
        (refunded,) = emu.dataset.step_events()[0]["refunded_orders"]
        assert s.get(emu.url + f"{ORDERS}/{refunded}", timeout=10).json() == emu.dataset.order(refunded)
        emu.grow(1)
        assert emu.health()["growth"] == [[2, 0, 1, 1, 1], [1, 0]]


# --------------------------------------------------------------------------- together with the other knobs

def test_events_with_pending_purged_identical_empty_and_unreconciled_payouts(transaction_schema):
    spec = DatasetSpec(seed=8, payouts=12, transactions_per_payout=14, identical_rows_per_payout=2,
                       purged_order_ratio=0.3, empty_payouts=3, pending_transactions=5, unreconciled_payouts=2,
                       currencies=("EUR", "USD"), disputes=6)
    ds = Dataset(spec)
    n = spec.pending_transactions
    empty = [p["payment_reference"] for p in ds.payouts() if not ds.transactions_for(p["payment_reference"])]
    assert len(empty) == 3
    for step in range(3):
        pending = ds.pending_transactions()
        first = ds.grow(new_payouts=2, late_payouts=1, refunds_on_old_orders=2, gone_orders=1, new_disputes=1)[0]
        rows = ds.transactions_for(first["payment_reference"])
        t = spec.transactions_per_payout
        # own rows, then the pending rows it took in, then the events' rows
        assert [{k: v for k, v in r.items() if k not in ("payment_reference", "payout")} for r in rows[t:t + n]] == \
            pending
        events = rows[t + n:]
        log = ds.step_events()[-1]
        assert [r["order_id"] for r in events[:3]] == log["refunded_orders"] + log["gone_orders"]
        assert [r["type"] for r in events[:3]] == ["RETURN", "RETURN", "FEE"]
        assert all(not list(transaction_schema.iter_errors(r)) for r in rows)
        touched = log["refunded_orders"] + log["gone_orders"] + [ds.dispute(k)["order"]["order_id"]
                                                                 for k in log["opened_disputes"]]
        assert not any(ds.is_purged(o) for o in touched)
        pending_orders = {r["order_id"] for r in pending}
        assert not pending_orders & set(touched), "orders of pending sets are not drawn"
    offsets = reconcile(ds)
    assert {ref for ref, off in offsets.items() if off} == set(ds.unreconciled_payment_references())
    assert all(offsets[ref] == 100 for ref in ds.unreconciled_payment_references())
    assert all(not ds.transactions_for(ref) for ref in empty), "empty payouts stay empty"
    rows = list(ds.transactions())
    assert rows[-n:] == ds.pending_transactions() and all("payment_reference" in r for r in rows[:-n])
    for p in ds.payouts():  # every payout with rows of its own still has its identical FEE copies
        own = ds.transactions_for(p["payment_reference"])[:spec.transactions_per_payout]
        if own:
            assert len({json.dumps(r, sort_keys=True) for r in own}) < len(own)
    with served(Dataset(spec, growth=ds.growth)) as s:
        assert walk(s) == rows
        for order_id in ds.order_ids():
            resp = s.get(f"{s.base}{ORDERS}/{order_id}", timeout=10)
            expected = ds.order(order_id)
            assert (resp.status_code, resp.json() if resp.status_code == 200 else None) == \
                ((200, expected) if expected is not None else (404, None))
            assert (expected is None) == (ds.is_purged(order_id) or ds.is_gone(order_id))
