"""The emulator's pending transactions (in no payout yet) and its unreconciled payouts, through a real
HTTP server started in this process and through the in-process ``Dataset`` mirror.

Run from the repository root: `.venv/bin/pytest -q emulator/tests/test_pending_and_unreconciled.py`.
"""
from __future__ import annotations

import collections
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
SUMMARY = "/settlements/v1/payouts/summary"
TRANSACTIONS = "/settlements/v1/transactions"
ORDERS = "/ordermanagement/v1/orders"
USER, PASSWORD = "pending", "pending-secret"

SPEC = DatasetSpec(seed=11, payouts=9, transactions_per_payout=12, identical_rows_per_payout=1,
                   purged_order_ratio=0.3, pending_transactions=7, unreconciled_payouts=2)
N = SPEC.pending_transactions
#: the sign convention documented in klarna_emulator/transactions.py, written out independently
TOWARDS_MERCHANT = ("sale_amount", "release_amount", "credit_amount", "fee_refund_amount", "fee_correction_amount")
TOWARDS_KLARNA = ("fee_amount", "return_amount", "reversal_amount", "commission_amount", "tax_amount",
                  "holdback_amount", "charge_amount")


def served(dataset):
    return emulator_session.served(dataset, USER, PASSWORD)


def walk(session, size, **params) -> tuple:
    """Every row of /transactions along pagination.next; -> (rows, total)."""
    body = get(session, TRANSACTIONS, size=size, **params)
    rows, total = list(body["transactions"]), body["pagination"]["total"]
    while body["pagination"].get("next"):
        resp = session.get(body["pagination"]["next"], timeout=10)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        rows.extend(body["transactions"])
    return rows, total


def grow(session, new_payouts, late_payouts) -> list:
    resp = session.post(session.base + "/_emulator/grow", timeout=10,
                        json={"new_payouts": new_payouts, "late_payouts": late_payouts})
    assert resp.status_code == 200, resp.text
    return resp.json()["added"]


def all_payouts(session) -> list:
    return get(session, PAYOUTS, size=500)["payouts"]


def without_reference(row) -> dict:
    return {k: v for k, v in row.items() if k not in ("payment_reference", "payout")}


@pytest.fixture(scope="module")
def transaction_schema():
    with open(SETTLEMENTS_OPENAPI) as f:
        schemas = yaml.safe_load(f)["components"]["schemas"]
    return jsonschema.Draft7Validator(schemas["Transaction"])


def check_pending_rows(rows, payouts, spec, schema):
    newest = max(parse_datetime(p["payout_date"]) for p in payouts)
    for row in rows:
        assert "payment_reference" not in row and "payout" not in row, row
        errors = [e.message for e in schema.iter_errors(row)]
        assert not errors, errors
        assert parse_datetime(row["sale_date"]) > newest and parse_datetime(row["capture_date"]) > newest, row
        assert row["currency_code"] in spec.currencies
    types = {r["type"] for r in rows}
    assert {"SALE", "FEE"} <= types, types


# --------------------------------------------------------------------------- pending transactions

def test_pending_rows_are_listed_last_without_reference_and_in_no_payout(transaction_schema):
    mirror = Dataset(SPEC)
    pending = mirror.pending_transactions()
    assert len(pending) == N
    with served(Dataset(SPEC)) as s:
        payouts = all_payouts(s)
        rows, total = walk(s, size=5)  # pages straddle the last payout's rows and the pending ones
        assert rows == list(mirror.transactions())
        assert total == len(rows) == mirror.transaction_count() == len(payouts) * SPEC.transactions_per_payout + N
        assert rows[-N:] == pending  # the pending rows come after every payout's rows
        assert all("payment_reference" in r for r in rows[:-N])
        check_pending_rows(pending, payouts, SPEC, transaction_schema)
        # a page starting exactly at the first pending row, one at the last row
        first = total - N
        assert get(s, TRANSACTIONS, offset=first, size=3)["transactions"] == pending[:3]
        last = get(s, TRANSACTIONS, offset=total - 1, size=20)
        assert last["transactions"] == pending[-1:] and last["pagination"]["count"] == 1

        pending_orders = {r["order_id"] for r in pending}
        for p in payouts:  # ?payment_reference= never returns them
            listed, _ = walk(s, size=500, payment_reference=p["payment_reference"])
            assert not pending_orders & {r["order_id"] for r in listed}
            assert all(r["payment_reference"] == p["payment_reference"] for r in listed)
        for order_id in pending_orders:
            expected = [r for r in pending if r["order_id"] == order_id]
            assert get(s, TRANSACTIONS, order_id=order_id)["transactions"] == expected
            body = get(s, TRANSACTIONS, order_id=order_id, payment_reference=payouts[0]["payment_reference"])
            assert body["transactions"] == [] and body["pagination"]["total"] == 0
            resp = s.get(f"{s.base}{ORDERS}/{order_id}", timeout=10)  # never purged, despite the 30 %
            assert resp.status_code == 200, resp.text
            order = resp.json()
            assert order == mirror.order(order_id) and not mirror.is_purged(order_id)
            capture_ids = {c["capture_id"] for c in order["captures"]}
            assert {r["capture_id"] for r in expected if r["type"] in ("SALE", "FEE")} <= capture_ids
            assert order["purchase_currency"] == expected[0]["currency_code"]
            assert len({r["currency_code"] for r in expected}) == 1
        assert pending_orders <= set(mirror.order_ids())


def test_grow_moves_the_pending_rows_into_its_first_new_payout(transaction_schema):
    mirror = Dataset(SPEC)
    with served(Dataset(SPEC)) as s:
        before = mirror.pending_transactions()
        before_orders = {r["order_id"]: s.get(f"{s.base}{ORDERS}/{r['order_id']}", timeout=10).content
                         for r in before}

        # late payouts alone do not settle anything
        assert grow(s, 0, 1) == [p["payment_reference"] for p in mirror.grow(0, 1)]
        assert mirror.pending_transactions() == before
        assert walk(s, size=50)[0][-N:] == before

        added = grow(s, 2, 1)
        assert added == [p["payment_reference"] for p in mirror.grow(2, 1)]
        first, second = added[0], added[1]
        payout_rows, _ = walk(s, size=500, payment_reference=first)
        assert len(payout_rows) == SPEC.transactions_per_payout + N
        moved = payout_rows[-N:]  # after the payout's own rows, in their pending order
        for old, new in zip(before, moved):
            assert new["payment_reference"] == first
            assert new["payout"] == f"https://api.klarna.com/settlements/v1/payouts/{first}"
            assert without_reference(new) == old
            assert [k for k in new if k in old] == list(old)  # every other field kept, in its place
        assert len(walk(s, size=500, payment_reference=second)[0]) == SPEC.transactions_per_payout

        # a fresh, different set took their place, dated after the newest payout
        payouts = all_payouts(s)
        after = mirror.pending_transactions()
        assert len(after) == N and not {r["order_id"] for r in after} & set(before_orders)
        check_pending_rows(after, payouts, SPEC, transaction_schema)
        first_payout = s.get(f"{s.base}{PAYOUTS}/{first}", timeout=10).json()
        assert {r["currency_code"] for r in moved} == {first_payout["currency_code"]}

        rows, total = walk(s, size=9)
        assert rows == list(mirror.transactions()) and total == mirror.transaction_count()
        assert rows[-N:] == after
        assert [r for r in rows if "payment_reference" not in r] == after  # nothing both pending and paid
        for order_id, order_bytes in before_orders.items():
            everywhere = [r for r in rows if r["order_id"] == order_id]
            in_payout = [r for r in moved if r["order_id"] == order_id]
            assert everywhere == in_payout and all(r["payment_reference"] == first for r in everywhere)
            assert get(s, TRANSACTIONS, order_id=order_id)["transactions"] == in_payout
            assert get(s, TRANSACTIONS, order_id=order_id, payment_reference=first)["transactions"] == in_payout
            assert get(s, TRANSACTIONS, order_id=order_id, payment_reference=second)["transactions"] == []
            assert s.get(f"{s.base}{ORDERS}/{order_id}", timeout=10).content == order_bytes

        # the payout's totals include the rows it took in
        totals = s.get(f"{s.base}{PAYOUTS}/{first}", timeout=10).json()["totals"]
        assert totals == expected_totals(payout_rows)[0]
        assert totals != expected_totals(payout_rows[:-N])[0]

        # and the next grow settles the new set
        third = grow(s, 1, 0)[0]
        mirror.grow(1, 0)
        assert [without_reference(r) for r in walk(s, size=500, payment_reference=third)[0][-N:]] == after
        third_payout = s.get(f"{s.base}{PAYOUTS}/{third}", timeout=10).json()
        assert {r["currency_code"] for r in after} == {third_payout["currency_code"]}
        assert walk(s, size=500)[0] == list(mirror.transactions())


def test_pending_transactions_without_payouts():
    spec = DatasetSpec(payouts=0, pending_transactions=3, currencies=("SEK",))
    ds = Dataset(spec)
    assert ds.payouts() == [] and len(ds.pending_transactions()) == 3 == ds.transaction_count()
    assert list(ds.transactions()) == ds.pending_transactions()
    assert all(r["currency_code"] == "SEK" for r in ds.pending_transactions())
    assert ds.transactions_page(offset=0, size=2)[1] == 3
    before = ds.pending_transactions()
    ref = ds.grow(1)[0]["payment_reference"]
    assert [without_reference(r) for r in ds.transactions_for(ref)[-3:]] == before
    assert len(ds.transactions_for(ref)) == spec.transactions_per_payout + 3


# --------------------------------------------------------------------------- totals and unreconciled payouts

def expected_totals(rows) -> tuple:
    """(totals from the rows by the documented sign convention, the signed settlement sum)."""
    sums = dict.fromkeys(TOTALS_BY_TYPE, 0)
    for row in rows:
        assert row["amount"] > 0
        (key,) = [k for k, types in TOTALS_BY_TYPE.items() if row["type"] in types]
        sums[key] += row["amount"]
    settlement = sum(sums[k] for k in TOWARDS_MERCHANT) - sum(sums[k] for k in TOWARDS_KLARNA)
    deposit = -settlement if settlement < 0 else 0
    sums.update(repay_amount=0, tax_refund_amount=0, settlement_amount=settlement, deposit_amount=deposit,
                opening_debt_balance_amount=0, closing_debt_balance_amount=deposit)
    return sums, settlement


def settlement_offsets(session) -> dict:
    """payment_reference -> served settlement_amount minus the signed sum of its rows; every other total
    must match its rows exactly."""
    offsets = {}
    for p in all_payouts(session):
        rows, total = walk(session, size=500, payment_reference=p["payment_reference"])
        assert len(rows) == total
        expected, settlement = expected_totals(rows)
        served_totals = dict(p["totals"])
        offsets[p["payment_reference"]] = served_totals.pop("settlement_amount") - settlement
        expected.pop("settlement_amount")
        assert served_totals == expected, p["payment_reference"]
    return offsets


@pytest.mark.parametrize("spec", [SPEC, DatasetSpec(seed=4, payouts=6, transactions_per_payout=10, empty_payouts=3,
                                                    unreconciled_payouts=2, currencies=("EUR", "USD"))],
                         ids=["pending", "empty"])
def test_totals_match_the_rows_except_for_the_unreconciled_payouts(spec):
    mirror = Dataset(spec)
    with served(Dataset(spec)) as s:
        unreconciled = mirror.unreconciled_payment_references()
        oldest = [p["payment_reference"] for p in sorted(all_payouts(s), key=lambda p: p["payout_date"])]
        assert len(unreconciled) == spec.unreconciled_payouts == 2 and unreconciled == oldest[:2]
        offsets = settlement_offsets(s)
        assert {ref for ref, off in offsets.items() if off} == set(unreconciled)
        assert all(offsets[ref] == 100 for ref in unreconciled)
        # the summary adds up the served settlement amounts, the 100s included
        summary = get(s, SUMMARY, start_date="2000-01-01T00:00:00Z", end_date="2100-01-01T00:00:00Z")
        served_sum = sum(p["totals"]["settlement_amount"] for p in all_payouts(s))
        assert sum(x["summary_total_settlement_amount"] for x in summary) == served_sum

        grow(s, 2, 2)  # growth adds reconciled payouts only and keeps the unreconciled ones
        mirror.grow(2, 2)
        offsets = settlement_offsets(s)
        assert len(offsets) == spec.payouts + 4
        assert {ref for ref, off in offsets.items() if off} == set(unreconciled)
        assert all(offsets[ref] == 100 for ref in unreconciled)
        assert mirror.unreconciled_payment_references() == unreconciled
        assert all_payouts(s) == mirror.payouts()
    if spec.empty_payouts:  # an empty unreconciled payout: no rows, settlement_amount 100
        empty_and_unreconciled = [ref for ref in unreconciled if not mirror.transactions_for(ref)]
        assert empty_and_unreconciled and all(
            mirror.payout(ref)["totals"]["settlement_amount"] == 100 for ref in empty_and_unreconciled)


# --------------------------------------------------------------------------- determinism, defaults, CLI

def serialized_everything(ds) -> list:
    rows, total = ds.transactions_page(offset=0, size=10 ** 9)
    out = [json.dumps(ds.payouts()).encode(), str(total).encode(), *rows]
    out += [ds.order_json(order_id) or b"404" for order_id in ds.order_ids()]
    out.append(json.dumps(ds.pending_transactions()).encode())
    out.append(json.dumps(ds.unreconciled_payment_references()).encode())
    return out


def test_two_datasets_of_one_spec_are_byte_identical():
    growth = [(0, 1), (2, 1), (1, 0)]
    a, b = Dataset(SPEC, growth=growth), Dataset(SPEC)
    for step in growth:
        b.grow(*step)
    assert serialized_everything(a) == serialized_everything(b)
    assert a.pending_transactions() == b.pending_transactions() != []
    other = Dataset(DatasetSpec(**{**SPEC.__dict__, "seed": SPEC.seed + 1}), growth=growth)
    assert other.pending_transactions() != a.pending_transactions()


def test_defaults_leave_the_data_as_it_was():
    spec = DatasetSpec(payouts=6, transactions_per_payout=10)
    assert spec.pending_transactions == 0 and spec.unreconciled_payouts == 0
    ds = Dataset(spec, growth=[(1, 1)])
    assert ds.pending_transactions() == [] and ds.unreconciled_payment_references() == []
    assert all("payment_reference" in r for r in ds.transactions())
    assert ds.transaction_count() == 8 * 10
    with_zero = Dataset(DatasetSpec(payouts=6, transactions_per_payout=10, pending_transactions=0,
                                    unreconciled_payouts=0), growth=[(1, 1)])
    assert serialized_everything(with_zero) == serialized_everything(ds)
    # the other knobs do not change the rows of the payouts that exist: only settlement_amount moves
    knobbed = Dataset(DatasetSpec(payouts=6, transactions_per_payout=10, pending_transactions=4,
                                  unreconciled_payouts=1))
    plain = Dataset(spec)
    for p in plain.payouts():
        ref = p["payment_reference"]
        assert knobbed.transactions_for(ref) == plain.transactions_for(ref)
        off = knobbed.payout(ref)["totals"]["settlement_amount"] - p["totals"]["settlement_amount"]
        assert off == (100 if ref in knobbed.unreconciled_payment_references() else 0)


def test_spec_validation_and_cli_flags():
    with pytest.raises(ValueError, match="pending_transactions"):
        DatasetSpec(pending_transactions=-1)
    with pytest.raises(ValueError, match="pending_transactions"):
        DatasetSpec(pending_transactions=1 << 16)
    with pytest.raises(ValueError, match="unreconciled_payouts"):
        DatasetSpec(payouts=3, unreconciled_payouts=4)
    args = SPEC.to_cli_args()
    assert args[args.index("--pending-transactions") + 1] == "7"
    assert args[args.index("--unreconciled-payouts") + 1] == "2"
    parsed = build_parser().parse_args(["--pending-transactions", "5", "--unreconciled-payouts", "3"])
    assert (parsed.pending_transactions, parsed.unreconciled_payouts) == (5, 3)


def test_subprocess_emulator_serves_the_mirror():
    """The flags reach the emulator through the client's command line (KlarnaEmulator runs a subprocess)."""
    spec = DatasetSpec(seed=2, payouts=4, transactions_per_payout=6, pending_transactions=3, unreconciled_payouts=1)
    with KlarnaEmulator(spec) as emu, requests.Session() as s:
        s.auth = emu.auth
        served_spec = s.get(emu.url + "/_emulator/spec", timeout=10).json()["spec"]
        assert (served_spec["pending_transactions"], served_spec["unreconciled_payouts"]) == (3, 1)
        body = s.get(emu.url + TRANSACTIONS, params={"size": 500}, timeout=10).json()
        assert body["transactions"] == list(emu.dataset.transactions())
        assert body["transactions"][-3:] == emu.dataset.pending_transactions()
        emu.grow(new_payouts=1)
        body = s.get(emu.url + TRANSACTIONS, params={"size": 500}, timeout=10).json()
        assert body["transactions"] == list(emu.dataset.transactions())
        assert collections.Counter("payment_reference" in r for r in body["transactions"]) == \
            {True: 5 * 6 + 3, False: 3}
        ref = emu.dataset.unreconciled_payment_references()[0]
        assert s.get(emu.url + f"{PAYOUTS}/{ref}", timeout=10).json() == emu.dataset.payout(ref)


def test_transactions_and_orders_do_not_import_each_other():
    """The records both generators share live in records.py; neither module imports the other, not even
    for type checking."""
    import ast
    from pathlib import Path

    import klarna_emulator

    package = Path(klarna_emulator.__file__).resolve().parent

    def imported(module):
        tree = ast.parse((package / f"{module}.py").read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}

    assert "orders" not in imported("transactions") and "transactions" not in imported("orders")
    assert "records" in imported("transactions") and "records" in imported("orders")
    assert imported("records") <= {"catalogue"}
