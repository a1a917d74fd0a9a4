"""Tests of the Klarna API emulator itself (not of the connector).

Run from the repository root: `.venv/bin/pytest emulator/tests -q` (after `make install`).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import requests
import yaml

from klarna_emulator import Dataset, DatasetSpec, EmulatorStartError, FaultConfig, KlarnaEmulator
from klarna_emulator.dataset import TOTALS_BY_TYPE, format_datetime, parse_datetime
from klarna_emulator.faults import FaultController, RateLimiter
from reference import ORDER_MANAGEMENT_OPENAPI, SETTLEMENTS_OPENAPI

HERE = Path(__file__).resolve().parent
PAYOUTS = "/settlements/v1/payouts"
SUMMARY = "/settlements/v1/payouts/summary"
TRANSACTIONS = "/settlements/v1/transactions"
ORDERS = "/ordermanagement/v1/orders"
DATE_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ALL_TYPES = {"COMMISSION", "SALE", "REVERSAL", "RETURN", "TAX", "FEE", "FEE_REFUND", "CORRECTION",
             "REVERSAL_MERCHANT_PROTECTION", "CHARGE", "CREDIT", "HOLDBACK", "RELEASE"}
DETAILED_BY_TYPE = {
    "SALE": {"PURCHASE"},
    "FEE": {"PURCHASE_FEE_PERCENTAGE", "PURCHASE_FEE_FIXED", "RETURN_FEE", "LATE_RETURN_FEE", "SERVICING_FEE",
            "EXTEND_DUE_DATE_FEE"},
    "RETURN": {"PURCHASE_RETURN"},
    "REVERSAL": {"REVERSAL"},
    "REVERSAL_MERCHANT_PROTECTION": {"REVERSAL"},
    "COMMISSION": {"PURCHASE_COMMISSION_PERCENTAGE", "COMMISSION"},
    "TAX": {None},
    "HOLDBACK": {"ROLLING_RESERVE"},
    "RELEASE": {"ROLLING_RESERVE"},
    "CHARGE": {"FRAUD_POLICY_CHARGE", "DISPUTE_FEE", "EXTRA_INVOICE_FEE"},
    "CREDIT": {"FRAUD_POLICY_CREDIT_NET", "CREDITED_CORRECTION", "MANUAL_ENTRY"},
    "FEE_REFUND": {"PURCHASE_FEE_PERCENTAGE_REFUND", "FEE_REFUND", "DISPUTE_FEE_REFUND"},
    "CORRECTION": {"FIXED_FEE_CORRECTION", "PERCENTAGE_FEE_CORRECTION", "CORRECTION"},
}
MAIN_SPEC = DatasetSpec(purged_order_ratio=0.1)


# --------------------------------------------------------------------------- OpenAPI schemas

def _inline(node, schemas, strict_objects):
    """Resolve ``#/components/schemas/...`` refs inline; optionally forbid undocumented keys."""
    if isinstance(node, list):
        return [_inline(x, schemas, strict_objects) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _inline(schemas[node["$ref"].rsplit("/", 1)[-1]], schemas, strict_objects)
    out = {}
    for k, v in node.items():
        if k == "properties":
            out[k] = {name: _inline(s, schemas, strict_objects) for name, s in v.items()}
        elif k == "example":
            continue
        else:
            out[k] = _inline(v, schemas, strict_objects)
    if strict_objects and out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    if strict_objects and "enum" in out and any(isinstance(e, str) and "|" in e for e in out["enum"]):
        # spec quirk: order_line.type's enum is ONE pipe-joined string; its `pattern` lists the values
        out["enum"] = [x for e in out["enum"] for x in e.split("|")]
    return out


class Schemas:
    def __init__(self):
        with open(SETTLEMENTS_OPENAPI) as f:
            st = yaml.safe_load(f)["components"]["schemas"]
        with open(ORDER_MANAGEMENT_OPENAPI) as f:
            om = yaml.safe_load(f)["components"]["schemas"]
        # Settlements schemas are used exactly as published (they carry additionalProperties: false).
        self.settlements = {n: _inline(s, st, False) for n, s in st.items()}
        # Order Management schemas are open objects; we additionally forbid undocumented keys so
        # the emulator cannot invent fields.
        self.om = {n: _inline(s, om, True) for n, s in om.items()}
        self._validators = {}

    def validate(self, family, name, instance):
        key = (family, name)
        v = self._validators.get(key)
        if v is None:
            schema = (self.settlements if family == "st" else self.om)[name]
            if name.endswith("[]"):
                schema = {"type": "array", "items": (self.settlements if family == "st" else self.om)[name[:-2]]}
            jsonschema.Draft7Validator.check_schema(schema)
            v = self._validators[key] = jsonschema.Draft7Validator(schema)
        errors = sorted(v.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.fixture(scope="session")
def schemas():
    s = Schemas()
    s.settlements["PayoutSummary[]"] = s.settlements["PayoutSummary"]
    return s


def assert_error(schemas, resp, status, code=None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    schemas.validate("st", "ErrorResponse", body)
    if code:
        assert body["error_code"] == code
    assert body["error_messages"] and all(isinstance(m, str) and m for m in body["error_messages"])
    assert UUID_RE.match(body["correlation_id"])
    assert resp.headers["Klarna-Correlation-Id"] == body["correlation_id"]
    return body


# --------------------------------------------------------------------------- fixtures / helpers

@pytest.fixture(scope="module")
def emu():
    with KlarnaEmulator(MAIN_SPEC) as e:
        yield e


@pytest.fixture(scope="module")
def http(emu):
    with requests.Session() as s:
        s.auth = emu.auth
        yield s


def get(session, emu, path, timeout=10, **params):
    return session.get(emu.url + path, params=params, timeout=timeout)


def walk(session, url, params, key, max_pages=10_000):
    """Follow pagination.next; return (all rows, list of (request offset, pagination))."""
    rows, pages = [], []
    resp = session.get(url, params=params, timeout=10)
    for _ in range(max_pages):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        rows.extend(body[key])
        pages.append(body["pagination"])
        nxt = body["pagination"].get("next")
        if not nxt:
            return rows, pages
        resp = session.get(nxt, timeout=10)
    raise AssertionError("pagination did not end")


def check_pagination(pg, offset, size, total):
    count = max(0, min(size, total - offset))
    assert pg["count"] == count and pg["total"] == total and pg["offset"] == offset
    if offset + count < total:
        q = parse_qs(urlsplit(pg["next"]).query)
        assert q["offset"] == [str(offset + size)] and q["size"] == [str(size)]
        assert pg["next"].startswith("http://127.0.0.1:")
    else:
        assert "next" not in pg
    if offset > 0:
        q = parse_qs(urlsplit(pg["prev"]).query)
        assert q["offset"] == [str(max(0, offset - size))] and q["size"] == [str(size)]
    else:
        assert "prev" not in pg


def rss_kb(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --------------------------------------------------------------------------- dataset (in-process)

def test_dataset_is_deterministic_and_seeded():
    a, b = Dataset(MAIN_SPEC), Dataset(MAIN_SPEC)
    assert a.payouts() == b.payouts()
    assert list(a.transactions()) == list(b.transactions())
    c = Dataset(DatasetSpec(seed=2, purged_order_ratio=0.1))
    assert [p["payment_reference"] for p in c.payouts()] != [p["payment_reference"] for p in a.payouts()]
    refs = [p["payment_reference"] for p in a.payouts()]
    assert len(set(refs)) == len(refs) == MAIN_SPEC.payouts
    assert all(re.fullmatch(r"[A-Z0-9]{6,}", r) for r in refs)


def test_payout_dates_currencies_and_order():
    ds = Dataset(MAIN_SPEC)
    payouts = ds.payouts()
    first = parse_datetime(MAIN_SPEC.first_payout_date)
    by_date = sorted(payouts, key=lambda p: p["payout_date"])
    for i, p in enumerate(by_date):
        assert p["payout_date"] == format_datetime(first + (i // 3) * 86400 + 6 * 3600 + i)
        assert p["currency_code"] == MAIN_SPEC.currencies[i % 3]
        assert p["merchant_id"] == "K123456"
    keys = [(p["payout_date"], p["payment_reference"]) for p in payouts]
    assert keys == sorted(keys, key=lambda k: (-parse_datetime(k[0]), k[1])), "served newest first"


def test_totals_reconcile_with_transactions_for_every_payout():
    ds = Dataset(MAIN_SPEC)
    type_to_total = {t: k for k, ts in TOTALS_BY_TYPE.items() for t in ts}
    negative_seen = 0
    for p in ds.payouts():
        rows = ds.transactions_for(p["payment_reference"])
        assert len(rows) == MAIN_SPEC.transactions_per_payout
        sums = dict.fromkeys(TOTALS_BY_TYPE, 0)
        for r in rows:
            assert isinstance(r["amount"], int) and r["amount"] > 0
            sums[type_to_total[r["type"]]] += r["amount"]
        t = p["totals"]
        for k, v in sums.items():
            assert t[k] == v, (p["payment_reference"], k)
        assert t["tax_refund_amount"] == 0 and t["repay_amount"] == 0
        settlement = (t["sale_amount"] + t["release_amount"] + t["credit_amount"] + t["fee_refund_amount"]
                      + t["fee_correction_amount"] - t["fee_amount"] - t["return_amount"] - t["reversal_amount"]
                      - t["commission_amount"] - t["tax_amount"] - t["holdback_amount"] - t["charge_amount"])
        assert t["settlement_amount"] == settlement
        assert t["opening_debt_balance_amount"] == 0
        if settlement < 0:
            negative_seen += 1
            assert t["deposit_amount"] == t["closing_debt_balance_amount"] == -settlement
        else:
            assert t["deposit_amount"] == t["closing_debt_balance_amount"] == 0
    assert negative_seen <= 2, "generated data should be mostly positive"


def test_identical_rows_exist_inside_each_payout():
    ds = Dataset(MAIN_SPEC)
    for p in ds.payouts():
        rows = ds.transactions_for(p["payment_reference"])
        counts = collections.Counter(json.dumps(r, separators=(",", ":")) for r in rows)
        extra = sum(c - 1 for c in counts.values())
        assert extra == MAIN_SPEC.identical_rows_per_payout, p["payment_reference"]
        assert all(json.loads(k)["type"] == "FEE" for k, c in counts.items() if c > 1)
    # the knob works both ways
    none = Dataset(DatasetSpec(payouts=6, identical_rows_per_payout=0))
    for p in none.payouts():
        rows = none.transactions_for(p["payment_reference"])
        assert len({json.dumps(r) for r in rows}) == len(rows)


def test_transaction_rows_are_realistic_and_cover_every_type():
    ds = Dataset(MAIN_SPEC)
    payout_dates = {p["payment_reference"]: p["payout_date"] for p in ds.payouts()}
    seen_types, seen_detailed = set(), set()
    for r in ds.transactions():
        t = r["type"]
        seen_types.add(t)
        seen_detailed.add(r.get("detailed_type"))
        assert r.get("detailed_type") in DETAILED_BY_TYPE[t]
        if t in ("SALE", "FEE"):
            assert UUID_RE.match(r["capture_id"])
        else:
            assert r["capture_id"] == ""
        assert ("refund_id" in r) == (t == "RETURN")
        if t == "RETURN":
            assert UUID_RE.match(r["refund_id"])
        assert ("reversal_reference" in r) == t.startswith("REVERSAL")
        if t in ("FEE", "FEE_REFUND"):
            assert r["vat_rate"] == 1900 and 0 <= r["vat_amount"] < r["amount"]
            assert "tax_in_currency_of_registration_country" in r
        else:
            assert "vat_rate" not in r
        assert UUID_RE.match(r["order_id"])
        assert DATE_TIME_RE.match(r["sale_date"]) and DATE_TIME_RE.match(r["capture_date"])
        assert r["sale_date"] <= r["capture_date"] < payout_dates[r["payment_reference"]]
        assert r["payout"].endswith("/payouts/" + r["payment_reference"])
        assert r["currency_code"] in MAIN_SPEC.currencies
        assert re.fullmatch(r"[A-Z]{2}", r["purchase_country"]) and re.fullmatch(r"[A-Z]{2}", r["shipping_country"])
        assert r["initial_payment_method_type"] and r["short_order_id"] and r["merchant_reference1"]
        assert r["currency_code_of_registration_country"] == "EUR"
    assert seen_types == ALL_TYPES
    assert len(seen_detailed) >= 20


def test_every_documented_field_is_populated_somewhere(schemas):
    ds = Dataset(MAIN_SPEC)
    tx_keys = set().union(*(r.keys() for r in ds.transactions()))
    assert tx_keys == set(schemas.settlements["Transaction"]["properties"])
    payout_keys = set().union(*(p.keys() for p in ds.payouts()))
    assert payout_keys == set(schemas.settlements["Payout"]["properties"])
    totals_keys = set().union(*(p["totals"].keys() for p in ds.payouts()))
    assert totals_keys == set(schemas.settlements["Totals"]["properties"])
    order_keys = set().union(*(o.keys() for o in ds.orders()))
    wanted = {"order_id", "status", "order_amount", "original_order_amount", "captured_amount", "refunded_amount",
              "remaining_authorized_amount", "purchase_currency", "purchase_country", "order_lines", "captures",
              "refunds", "initial_payment_method", "billing_address", "shipping_address", "customer",
              "klarna_reference", "merchant_reference1", "merchant_reference2", "created_at", "expires_at",
              "fraud_status", "locale", "shipping_info"}
    assert wanted <= order_keys <= set(schemas.om["MerchantOrderDto"]["properties"])


def test_orders_are_consistent_with_transactions():
    ds = Dataset(MAIN_SPEC)
    rows_by_order = collections.defaultdict(list)
    for r in ds.transactions():
        rows_by_order[r["order_id"]].append(r)
    all_ids = list(ds.order_ids())
    assert set(all_ids) == set(rows_by_order) and len(all_ids) == len(set(all_ids))
    orders = {o["order_id"]: o for o in ds.orders()}
    purged = set(all_ids) - set(orders)
    assert 0.03 < len(purged) / len(all_ids) < 0.2, "purged_order_ratio=0.1"
    assert all(ds.order(oid) is None and ds.is_purged(oid) for oid in purged)
    statuses = collections.Counter()
    for oid, o in orders.items():
        rows = rows_by_order[oid]
        sales = [r for r in rows if r["type"] == "SALE"]
        returns = [r for r in rows if r["type"] == "RETURN"]
        assert sorted((c["capture_id"], c["captured_amount"]) for c in o["captures"]) == \
            sorted((r["capture_id"], r["amount"]) for r in sales)
        assert sorted((x["refund_id"], x["refunded_amount"]) for x in o["refunds"]) == \
            sorted((r["refund_id"], r["amount"]) for r in returns)
        assert o["captured_amount"] == sum(r["amount"] for r in sales)
        assert o["refunded_amount"] == sum(r["amount"] for r in returns) <= o["captured_amount"]
        assert sum(c["refunded_amount"] for c in o["captures"]) == o["refunded_amount"]
        assert sum(line["total_amount"] for line in o["order_lines"]) == o["order_amount"]
        assert o["purchase_currency"] == rows[0]["currency_code"]
        assert o["purchase_country"] == rows[0]["purchase_country"]
        assert o["merchant_reference1"] == rows[0]["merchant_reference1"]
        assert o["klarna_reference"] == rows[0]["short_order_id"]
        assert o["created_at"] == rows[0]["sale_date"]
        assert o["initial_payment_method"]["type"].lower() == rows[0]["initial_payment_method_type"]
        if o["captured_amount"] == o["order_amount"]:
            assert o["status"] == "CAPTURED" and o["remaining_authorized_amount"] == 0
        else:
            assert o["captured_amount"] < o["order_amount"]
            assert o["status"] in ("PART_CAPTURED", "CLOSED")
            expected_remaining = 0 if o["status"] == "CLOSED" else o["order_amount"] - o["captured_amount"]
            assert o["remaining_authorized_amount"] == expected_remaining
        statuses[o["status"]] += 1
    assert set(statuses) == {"CAPTURED", "PART_CAPTURED", "CLOSED"}


def test_grow_is_a_pure_function_of_spec_and_steps():
    spec = DatasetSpec(payouts=9, transactions_per_payout=10)
    a = Dataset(spec)
    newest_before = max(parse_datetime(p["payout_date"]) for p in a.payouts())
    added = a.grow(new_payouts=4, late_payouts=3)
    b = Dataset(spec, growth=[(4, 3)])
    assert a.payouts() == b.payouts() and list(a.transactions()) == list(b.transactions())
    assert a.growth == [(4, 3)] and a.payout_count == 16
    new, late = added[:4], added[4:]
    assert all(parse_datetime(p["payout_date"]) > newest_before for p in new)
    for p in late:
        d = parse_datetime(p["payout_date"])
        assert newest_before - 3 * 86400 < d < newest_before
        assert len(a.transactions_for(p["payment_reference"])) == 10
    # late payouts are mixed into the date order of the served list
    served = [p["payment_reference"] for p in a.payouts()]
    assert served.index(late[0]["payment_reference"]) > 4


def test_empty_payouts_have_no_transactions_and_zero_totals(schemas):
    spec = DatasetSpec(payouts=10, transactions_per_payout=12, empty_payouts=3)
    ds, full = Dataset(spec), Dataset(dataclasses.replace(spec, empty_payouts=0))
    by_date = sorted(ds.payouts(), key=lambda p: p["payout_date"])
    empty = [p["payment_reference"] for p in by_date if not ds.transactions_for(p["payment_reference"])]
    # k = 10 // 3 = 3: payouts 2, 5 and 8 of the generation order (one currency cycle is one day)
    assert empty == [by_date[i]["payment_reference"] for i in (2, 5, 8)]
    for p in ds.payouts():
        ref = p["payment_reference"]
        if ref in empty:
            assert set(p["totals"].values()) == {0}
        else:  # every other payout is byte for byte the one of the spec without empty payouts
            assert p == full.payout(ref) and ds.transactions_for(ref) == full.transactions_for(ref)
    assert ds.transaction_count() == 7 * 12 == len(list(ds.transactions()))
    assert set(ds.order_ids()) == {r["order_id"] for r in ds.transactions()}
    with pytest.raises(ValueError, match="empty_payouts"):
        DatasetSpec(payouts=2, empty_payouts=3)
    assert "--empty-payouts" in spec.to_cli_args()
    with KlarnaEmulator(spec) as emu, requests.Session() as s:
        s.auth = emu.auth
        for ref in empty:
            body = s.get(emu.url + TRANSACTIONS, params={"payment_reference": ref}, timeout=10).json()
            schemas.validate("st", "TransactionCollection", body)
            assert body == {"transactions": [], "pagination": {"count": 0, "total": 0, "offset": 0}}
            assert s.get(emu.url + f"{PAYOUTS}/{ref}", timeout=10).json()["totals"]["sale_amount"] == 0
        rows, pages = walk(s, emu.url + TRANSACTIONS, {"size": 5}, "transactions")
        assert rows == list(ds.transactions()) and pages[0]["total"] == 84
        assert s.get(emu.url + PAYOUTS, params={"size": 500}, timeout=10).json()["payouts"] == ds.payouts()
        summary = s.get(emu.url + SUMMARY, params={"start_date": "2020-01-01", "end_date": "2030-01-01"},
                        timeout=10).json()
        assert summary == ds.summary("2020-01-01", "2030-01-01")
        assert emu.health()["transactions"] == 84


# --------------------------------------------------------------------------- HTTP vs contract vs dataset

def test_payouts_page_and_single_payouts_match_schema_and_dataset(emu, http, schemas):
    r = get(http, emu, PAYOUTS, size=500)
    body = r.json()
    schemas.validate("st", "PayoutCollection", body)
    assert body["payouts"] == emu.dataset.payouts()
    check_pagination(body["pagination"], 0, 500, MAIN_SPEC.payouts)
    for p in body["payouts"]:
        one = get(http, emu, f"{PAYOUTS}/{p['payment_reference']}")
        assert one.status_code == 200
        schemas.validate("st", "Payout", one.json())
        assert one.json() == p
        assert one.headers["Content-Type"] == "application/json"
        assert int(one.headers["Content-Length"]) == len(one.content)
        assert UUID_RE.match(one.headers["Klarna-Correlation-Id"])


def test_all_transactions_walk_matches_schema_and_dataset(emu, http, schemas):
    total = MAIN_SPEC.payouts * MAIN_SPEC.transactions_per_payout
    rows, pages = [], []
    offset = 0
    for _ in range(100):
        r = get(http, emu, TRANSACTIONS, size=500, offset=offset)
        body = r.json()
        schemas.validate("st", "TransactionCollection", body)
        check_pagination(body["pagination"], offset, 500, total)
        rows.extend(body["transactions"])
        pages.append(body["pagination"])
        if "next" not in body["pagination"]:
            break
        offset += 500
    assert len(pages) == 4
    assert rows == list(emu.dataset.transactions())


def test_transactions_per_payout_with_odd_page_size(emu, http, schemas):
    payouts = emu.dataset.payouts()
    for p in payouts[::4] + [payouts[-1]]:
        ref = p["payment_reference"]
        rows, pages = walk(http, emu.url + TRANSACTIONS, {"payment_reference": ref, "size": 7}, "transactions")
        expected = emu.dataset.transactions_for(ref)
        assert rows == expected
        for i, pg in enumerate(pages):
            check_pagination(pg, i * 7, 7, len(expected))
    # the identical rows are served as identical bytes
    ref = payouts[0]["payment_reference"]
    text = get(http, emu, TRANSACTIONS, payment_reference=ref, size=500).text
    dup = [k for k, c in collections.Counter(json.dumps(r, separators=(",", ":"))
                                             for r in emu.dataset.transactions_for(ref)).items() if c > 1]
    assert dup and all(text.count(d) >= 2 for d in dup)
    # unknown reference: empty collection, not an error
    body = get(http, emu, TRANSACTIONS, payment_reference="NOPE").json()
    schemas.validate("st", "TransactionCollection", body)
    assert body["transactions"] == [] and body["pagination"]["total"] == 0


def test_transactions_by_order_id(emu, http, schemas):
    by_order = collections.defaultdict(list)
    for r in emu.dataset.transactions():
        by_order[r["order_id"]].append(r)
    for oid in list(by_order)[::25]:
        body = get(http, emu, TRANSACTIONS, order_id=oid, size=500).json()
        schemas.validate("st", "TransactionCollection", body)
        assert body["transactions"] == by_order[oid]
        assert body["pagination"]["total"] == len(by_order[oid])
        ref = by_order[oid][0]["payment_reference"]
        both = get(http, emu, TRANSACTIONS, order_id=oid, payment_reference=ref).json()
        assert both["transactions"] == by_order[oid]
        other = emu.dataset.payouts()[0]["payment_reference"]
        if other != ref:
            assert get(http, emu, TRANSACTIONS, order_id=oid, payment_reference=other).json()["transactions"] == []
    assert get(http, emu, TRANSACTIONS, order_id="00000000-0000-4000-8000-000000000000").json()[
        "pagination"]["total"] == 0


def test_orders_endpoint_matches_schema_and_dataset(emu, http, schemas):
    ids = list(emu.dataset.order_ids())
    assert len(ids) > 300
    served = purged = 0
    for oid in ids:
        r = get(http, emu, f"{ORDERS}/{oid}")
        if emu.dataset.is_purged(oid):
            purged += 1
            body = assert_error(schemas, r, 404, "NO_SUCH_ORDER")
            schemas.validate("om", "No such order error message", body)
            continue
        served += 1
        assert r.status_code == 200, r.text
        order = r.json()
        schemas.validate("om", "MerchantOrderDto", order)
        assert order == emu.dataset.order(oid)
    assert served > 250 and purged > 10
    body = assert_error(schemas, get(http, emu, f"{ORDERS}/not-an-order"), 404, "NO_SUCH_ORDER")
    schemas.validate("om", "No such order error message", body)
    # a syntactically valid uuid that decodes to a real slot but is not the generated id
    fake = "ffffffff-ffff-4fff-bfff-" + ids[0][24:]
    assert_error(schemas, get(http, emu, f"{ORDERS}/{fake}"), 404, "NO_SUCH_ORDER")


def test_summary(emu, http, schemas):
    payouts = emu.dataset.payouts()
    windows = [("2024-01-01", "2024-01-05"), ("2023-01-01T00:00:00Z", "2030-01-01T00:00:00Z"),
               ("2024-01-03T06:00:06Z", "2024-01-03T06:00:06Z"), ("2024-01-10T00:00:00+00:00", "2024-01-12")]
    for start, end in windows:
        r = get(http, emu, SUMMARY, start_date=start, end_date=end)
        body = r.json()
        schemas.validate("st", "PayoutSummary[]", body)
        assert body == emu.dataset.summary(start, end)
        s, e = parse_datetime(start), parse_datetime(end)
        inside = [p for p in payouts if s <= parse_datetime(p["payout_date"]) <= e]
        assert [x["summary_settlement_currency"] for x in body] == sorted({p["currency_code"] for p in inside})
        for x in body:
            cur = [p for p in inside if p["currency_code"] == x["summary_settlement_currency"]]
            assert x["summary_payout_date_start"] == format_datetime(s)
            assert x["summary_payout_date_end"] == format_datetime(e)
            for field in ("sale", "fee", "return", "reversal", "commission", "tax", "holdback", "release",
                          "settlement", "repay", "fee_correction"):
                assert x[f"summary_total_{field}_amount"] == sum(p["totals"][f"{field}_amount"] for p in cur)
    one = get(http, emu, SUMMARY, start_date="2024-01-03T06:00:06Z", end_date="2024-01-03T06:00:06Z").json()
    assert len(one) == 1, "exactly one payout at that second: end_date is inclusive"
    assert get(http, emu, SUMMARY, start_date="2024-01-01", end_date="2024-12-31", currency_code="SEK").json()[0][
        "summary_settlement_currency"] == "SEK"
    assert get(http, emu, SUMMARY, start_date="2020-01-01", end_date="2020-02-01").json() == []
    assert_error(schemas, get(http, emu, SUMMARY, start_date="2024-01-01"), 400, "BAD_REQUEST")
    assert_error(schemas, get(http, emu, SUMMARY, end_date="2024-01-01"), 400, "BAD_REQUEST")
    assert_error(schemas, get(http, emu, SUMMARY), 400, "BAD_REQUEST")


def test_error_bodies_match_schema(emu, http, schemas):
    for params in ({"size": 501}, {"size": 0}, {"size": "abc"}, {"size": "2.5"}, {"offset": -1},
                   {"offset": "x"}, {"start_date": "yesterday"}, {"end_date": "2024-13-45"},
                   {"start_date": "2024-01-01T00:00:00 00:00"}, {"currency_code": "EURO"}):
        assert_error(schemas, get(http, emu, PAYOUTS, **params), 400, "BAD_REQUEST")
    assert_error(schemas, get(http, emu, TRANSACTIONS, size=501), 400, "BAD_REQUEST")
    assert_error(schemas, get(http, emu, TRANSACTIONS, offset=-5), 400, "BAD_REQUEST")
    assert_error(schemas, get(http, emu, f"{PAYOUTS}/DOESNOTEXIST"), 404, "NOT_FOUND")
    assert_error(schemas, get(http, emu, "/settlements/v1/nope"), 404, "NOT_FOUND")
    assert_error(schemas, get(http, emu, "/"), 404, "NOT_FOUND")
    assert_error(schemas, http.post(emu.url + PAYOUTS, json={}, timeout=10), 405, "METHOD_NOT_ALLOWED")
    head = http.head(emu.url + PAYOUTS, timeout=10)
    assert head.status_code == 405 and head.content == b"" and head.headers["Klarna-Correlation-Id"]
    # errors raised by the HTTP parser itself also use the ErrorResponse body
    import socket
    with socket.create_connection(urlsplit(emu.url).netloc.split(":"), timeout=10) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    head_raw, _, body = raw.partition(b"\r\n\r\n")
    assert head_raw.startswith(b"HTTP/1.1 400")
    schemas.validate("st", "ErrorResponse", json.loads(body))
    # the keep-alive connection survives every error above
    assert get(http, emu, PAYOUTS).status_code == 200


@pytest.mark.parametrize("auth", [None, ("emulator", "wrong"), ("someone", "emulator-secret"), "garbage"])
@pytest.mark.parametrize("path", [PAYOUTS, TRANSACTIONS, SUMMARY + "?start_date=2024-01-01&end_date=2024-02-01",
                                  ORDERS + "/x", "/unknown"])
def test_auth_required_everywhere(emu, schemas, auth, path):
    headers = {}
    if auth == "garbage":
        headers["Authorization"] = "Basic !!!not-base64"
        auth = None
    r = requests.get(emu.url + path, auth=auth, headers=headers, timeout=10)
    body = assert_error(schemas, r, 401, "UNAUTHORIZED")
    assert "Basic" in r.headers["WWW-Authenticate"]
    assert body["error_messages"]


# --------------------------------------------------------------------------- pagination & filters

def test_pagination_fields_and_links(emu, http):
    total = MAIN_SPEC.payouts
    body = get(http, emu, PAYOUTS).json()
    check_pagination(body["pagination"], 0, 20, total)  # default size 20
    assert len(body["payouts"]) == 20
    for offset, size in ((20, 20), (40, 20), (45, 10), (49, 1), (50, 5), (70, 5), (3, 500)):
        pg = get(http, emu, PAYOUTS, offset=offset, size=size).json()["pagination"]
        check_pagination(pg, offset, size, total)
    # walking with next links yields every payout exactly once, in served order
    rows, pages = walk(http, emu.url + PAYOUTS, {"size": 13}, "payouts")
    assert [p["payment_reference"] for p in rows] == [p["payment_reference"] for p in emu.dataset.payouts()]
    assert [pg["offset"] for pg in pages] == [0, 13, 26, 39]
    # next/prev keep the other query parameters (and encode "+" correctly)
    params = {"start_date": "2024-01-02T00:00:00+00:00", "currency_code": "EUR", "size": 2}
    body = get(http, emu, PAYOUTS, **params).json()
    nxt = body["pagination"]["next"]
    q = parse_qs(urlsplit(nxt).query)
    assert q["start_date"] == ["2024-01-02T00:00:00+00:00"] and q["currency_code"] == ["EUR"]
    second = http.get(nxt, timeout=10).json()
    assert second["pagination"]["offset"] == 2
    back = http.get(second["pagination"]["prev"], timeout=10).json()
    assert back == body


def test_size_limits(emu, http, schemas):
    assert len(get(http, emu, TRANSACTIONS, size=500).json()["transactions"]) == 500
    assert len(get(http, emu, TRANSACTIONS, size=1).json()["transactions"]) == 1
    assert_error(schemas, get(http, emu, TRANSACTIONS, size=501), 400)
    assert_error(schemas, get(http, emu, PAYOUTS, size=1000), 400)


def test_date_filter_semantics(emu, http):
    payouts = emu.dataset.payouts()

    def refs(**params):
        return [p["payment_reference"] for p in get(http, emu, PAYOUTS, size=500, **params).json()["payouts"]]

    def expected(start=None, end=None, currency=None):
        return [p["payment_reference"] for p in payouts
                if (start is None or parse_datetime(p["payout_date"]) >= parse_datetime(start))
                and (end is None or parse_datetime(p["payout_date"]) <= parse_datetime(end))
                and (currency is None or p["currency_code"] == currency)]

    # bare date == midnight UTC
    assert refs(start_date="2024-01-05") == refs(start_date="2024-01-05T00:00:00Z") == expected("2024-01-05T00:00:00Z")
    assert refs(end_date="2024-01-05") == expected(end="2024-01-05T00:00:00Z")
    assert len(refs(start_date="2024-01-05", end_date="2024-01-05")) == 0, "same bare date = empty window"
    assert len(refs(start_date="2024-01-05", end_date="2024-01-05T23:59:59Z")) == 3
    # inclusive bounds at the exact payout second
    p = payouts[10]
    assert refs(start_date=p["payout_date"], end_date=p["payout_date"]) == [p["payment_reference"]]
    just_before = format_datetime(parse_datetime(p["payout_date"]) - 1)
    assert p["payment_reference"] not in refs(end_date=just_before)
    assert p["payment_reference"] in refs(start_date=p["payout_date"])
    # Z, +00:00 and other offsets
    assert refs(start_date="2024-01-05T00:00:00+00:00") == expected("2024-01-05T00:00:00Z")
    assert refs(start_date="2024-01-05T02:00:00+02:00") == expected("2024-01-05T00:00:00Z")
    assert refs(start_date="2024-01-05T06:00:00.000Z") == expected("2024-01-05T06:00:00Z")
    # start after end -> empty, currency filter
    assert refs(start_date="2024-02-01", end_date="2024-01-01") == []
    for cur in ("EUR", "SEK", "USD"):
        got = refs(currency_code=cur, start_date="2024-01-04")
        assert got == expected("2024-01-04", currency=cur) and got
    assert refs(currency_code="GBP") == []


# --------------------------------------------------------------------------- growth

def test_grow_new_and_late_payouts_are_served_and_mirrored(schemas):
    spec = DatasetSpec(payouts=12, transactions_per_payout=15)
    with KlarnaEmulator(spec) as emu, requests.Session() as s:
        s.auth = emu.auth
        before = s.get(emu.url + PAYOUTS, params={"size": 500}, timeout=10).json()["payouts"]
        newest = before[0]["payout_date"]
        added = emu.grow(new_payouts=3, late_payouts=2)
        assert len(added) == 5
        after = s.get(emu.url + PAYOUTS, params={"size": 500}, timeout=10).json()
        schemas.validate("st", "PayoutCollection", after)
        assert after["payouts"] == emu.dataset.payouts() and after["pagination"]["total"] == 17
        dates = {p["payment_reference"]: p["payout_date"] for p in after["payouts"]}
        assert all(dates[r] > newest for r in added[:3])
        assert all(dates[r] < newest for r in added[3:]), "late payouts are dated in the past"
        # an incremental reader starting at the old newest date sees only the new ones
        inc = s.get(emu.url + PAYOUTS, params={"start_date": newest, "size": 500}, timeout=10).json()["payouts"]
        assert {p["payment_reference"] for p in inc} == set(added[:3]) | {before[0]["payment_reference"]}
        for ref in added:
            got = s.get(emu.url + TRANSACTIONS, params={"payment_reference": ref, "size": 500}, timeout=10).json()
            assert got["transactions"] == emu.dataset.transactions_for(ref) and len(got["transactions"]) == 15
        rows, _ = walk(s, emu.url + TRANSACTIONS, {"size": 100}, "transactions")
        assert rows == list(emu.dataset.transactions())
        assert emu.health()["payouts"] == 17
        emu.grow(new_payouts=1)
        assert Dataset(spec, growth=[(3, 2), (1, 0)]).payouts() == \
            s.get(emu.url + PAYOUTS, params={"size": 500}, timeout=10).json()["payouts"]


# --------------------------------------------------------------------------- knobs

@pytest.fixture(scope="module")
def kemu():
    with KlarnaEmulator(DatasetSpec(payouts=6, transactions_per_payout=10)) as e:
        yield e


@pytest.fixture
def knobs(kemu):
    kemu.set_faults()
    kemu.reset_requests()
    yield kemu
    kemu.set_faults()


def fresh_session(emu):
    s = requests.Session()
    s.auth = emu.auth
    return s


def test_rate_limit_gives_429_with_retry_after(knobs, schemas):
    knobs.set_faults(rate_limit_rps=3)
    with fresh_session(knobs) as s:
        rs = [s.get(knobs.url + PAYOUTS, timeout=10) for _ in range(10)]
    codes = [r.status_code for r in rs]
    assert codes[:3] == [200, 200, 200] and 429 in codes, codes  # burst = rps = 3
    for r in rs:
        if r.status_code == 429:
            assert_error(schemas, r, 429, "RATE_LIMITED")
            assert int(r.headers["Retry-After"]) >= 1
    assert knobs.stats()["rate_limited"] == codes.count(429)
    assert knobs.health()["status"] == "ok", "admin endpoints are not rate limited"


def test_rate_limit_without_retry_after(knobs, schemas):
    knobs.set_faults(rate_limit_rps=2, retry_after=False)
    with fresh_session(knobs) as s:
        rs = [s.get(knobs.url + PAYOUTS, timeout=10) for _ in range(8)]
    limited = [r for r in rs if r.status_code == 429]
    assert limited
    for r in limited:
        assert_error(schemas, r, 429)
        assert "Retry-After" not in r.headers


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_rate_limit_windows_count_quota_and_a_429_consumes_none():
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock)
    readings = [limiter.admit() for _ in range(8)]
    assert [r.allowed for r in readings] == [True] * 5 + [False] * 3
    assert [r.remaining for r in readings] == [4, 3, 2, 1, 0, 0, 0, 0]
    clock.now += 0.999  # still the first window
    assert not limiter.admit().allowed
    clock.now += 0.001  # the second window: the refused requests used none of its quota
    assert [limiter.admit().remaining for _ in range(5)] == [4, 3, 2, 1, 0]
    clock.now += 5.5  # windows without requests are not counted
    r = limiter.admit()
    assert r.allowed and r.remaining == 4 and r.seconds_to_reset == pytest.approx(0.5)
    assert r.headers() == (("X-Ratelimit-Limit", "5, 5;w=1"), ("X-Ratelimit-Remaining", "4"),
                           ("X-Ratelimit-Reset", "1"))
    assert limiter.stats() == {"limit": 5, "enforced": True, "windows": 3,
                               "other_traffic": {"requests": 0, "refused": 0}, "lowest_remaining": None}


def test_rate_limit_other_traffic_shares_the_quota_arithmetically():
    clock = FakeClock()
    limiter = RateLimiter(10, other_traffic_rps=6, clock=clock)
    clock.now += 0.5  # the other traffic has sent floor(6 * 0.5) = 3
    assert [limiter.admit().remaining for _ in range(7)] == [6, 5, 4, 3, 2, 1, 0]
    assert not limiter.admit().allowed
    clock.now += 0.4  # t = 0.9: floor(5.4) = 5, the two new ones are refused
    assert limiter.stats()["other_traffic"] == {"requests": 5, "refused": 2}
    clock.now += 0.3  # next window, t = 0.2: the old one ended with 6 (one more refused), this one has 1
    r = limiter.admit()
    assert r.allowed and r.remaining == 10 - 1 - 1
    stats = limiter.stats()
    assert stats["other_traffic"] == {"requests": 7, "refused": 3} and stats["windows"] == 2
    # a quota the other traffic alone uses up: every connector request is refused
    busy = RateLimiter(4, other_traffic_rps=50, clock=clock)
    clock.now += 0.1  # 5 due, 4 used, 1 refused
    assert [busy.admit().allowed for _ in range(3)] == [False] * 3
    assert busy.stats()["other_traffic"] == {"requests": 5, "refused": 1}


def test_rate_limit_not_enforced_still_counts_against_klarnas_200():
    clock = FakeClock()
    limiter = RateLimiter(None, other_traffic_rps=400, clock=clock)
    clock.now += 0.4  # 160 of 200 used by the other traffic
    readings = [limiter.admit() for _ in range(45)]
    assert all(r.allowed for r in readings), "nothing is enforced"
    assert readings[0].remaining == 39 and readings[-1].remaining == 0
    assert readings[0].headers()[0] == ("X-Ratelimit-Limit", "200, 200;w=1")
    clock.now += 0.1  # the other traffic finds the quota used up: refused
    assert limiter.stats()["other_traffic"] == {"requests": 200, "refused": 40}
    assert limiter.stats()["enforced"] is False and limiter.stats()["limit"] == 200


def test_rate_limit_reset_and_reconfigure():
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock)
    limiter.admit(), limiter.admit()
    limiter.saw_remaining(3), limiter.saw_remaining(1)
    assert not limiter.admit().allowed
    limiter.configure(3)  # a fresh window with the new quota; the statistics stay
    assert [limiter.admit().remaining for _ in range(3)] == [2, 1, 0]
    assert limiter.stats()["windows"] == 2 and limiter.stats()["lowest_remaining"] == 1
    limiter.reset()
    assert limiter.stats() == {"limit": 3, "enforced": True, "windows": 0,
                               "other_traffic": {"requests": 0, "refused": 0}, "lowest_remaining": None}
    assert limiter.admit().remaining == 2


def test_fail_requests_come_before_the_rate_limit_and_count_against_the_quota():
    clock = FakeClock()
    controller = FaultController(FaultConfig(rate_limit_rps=2, fail_requests={2: "error_500", 4: "rate_limit",
                                                                              5: "invalid_json"}), clock=clock)
    decisions = [controller.decide(n, "payouts") for n in range(1, 7)]
    assert [d.fault for d in decisions] == [None, "error_500", "rate_limit", "rate_limit", "invalid_json",
                                            "rate_limit"]
    # the forced 500 used quota; the forced 429 did not; the forced invalid_json is answered although
    # the quota is used up (and is counted: the window has seen 3 requests of a quota of 2)
    assert [d.rate.remaining for d in decisions] == [1, 0, 0, 0, 0, 0]
    assert controller.limiter._used == 3


@pytest.mark.parametrize("bad", [0.5, 2.5, -1])
def test_rate_limit_rps_is_a_whole_quota(bad):
    with pytest.raises(ValueError, match="rate_limit_rps"):
        FaultConfig(rate_limit_rps=bad)
    assert FaultConfig(rate_limit_rps=15.0).rate_limit_rps == 15
    assert FaultConfig(rate_limit_rps=0).rate_limit_rps is None
    with pytest.raises(ValueError, match="other_traffic_rps"):
        FaultConfig(other_traffic_rps=-1)


def _rate_headers(resp):
    limit = resp.headers["X-Ratelimit-Limit"]
    remaining = int(resp.headers["X-Ratelimit-Remaining"])
    reset = int(resp.headers["X-Ratelimit-Reset"])
    assert reset >= 1 and remaining >= 0
    return limit, remaining, reset


def test_rate_limit_headers_on_every_kind_of_api_answer(knobs):
    knobs.set_faults(fail_requests={1: "error_503", 2: "error_500", 3: "rate_limit", 4: "invalid_json", 5: "slow"},
                     slow_seconds=0)
    with fresh_session(knobs) as s:
        answers = [s.get(knobs.url + PAYOUTS, timeout=10) for _ in range(5)]
        answers += [s.get(knobs.url + PAYOUTS, timeout=10),  # 200
                    s.get(knobs.url + PAYOUTS, params={"size": 0}, timeout=10),  # 400
                    requests.get(knobs.url + PAYOUTS, timeout=10),  # 401
                    s.get(knobs.url + PAYOUTS + "/NOPE", timeout=10),  # 404
                    s.post(knobs.url + PAYOUTS, timeout=10),  # 405
                    s.head(knobs.url + PAYOUTS, timeout=10)]  # 405, head only
        assert [r.status_code for r in answers] == [503, 500, 429, 200, 200, 200, 400, 401, 404, 405, 405]
        for r in answers:
            assert _rate_headers(r)[0] == "200, 200;w=1", r.status_code
        admin = s.get(knobs.url + "/_emulator/health", timeout=10)
        assert admin.status_code == 200 and "X-Ratelimit-Limit" not in admin.headers
    # the remaining count goes down by one a counted request (the 429 is not counted), and back to
    # L - 1 when a new window starts, whatever the timing
    remaining = [_rate_headers(r)[1] for r in answers]
    for before, after, answer in zip(remaining, remaining[1:], answers[1:]):
        expected = before if answer.status_code == 429 else before - 1
        assert after in (expected, 199), remaining
    assert knobs.stats()["rate_limit"]["lowest_remaining"] == min(remaining)


def test_rate_limit_headers_on_a_truncated_answer(knobs):
    import base64
    import http.client

    knobs.set_faults(fail_requests={1: "truncated_body"})
    token = base64.b64encode(":".join(knobs.auth).encode()).decode()
    conn = http.client.HTTPConnection(urlsplit(knobs.url).hostname, urlsplit(knobs.url).port, timeout=10)
    try:
        conn.request("GET", PAYOUTS, headers={"Authorization": f"Basic {token}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("X-Ratelimit-Limit") == "200, 200;w=1"
        assert int(resp.getheader("X-Ratelimit-Remaining")) == 199
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_rate_limit_enforced_with_other_traffic_over_http(knobs, schemas):
    # the other traffic uses the quota of 5 within microseconds of each window: the connector gets 429s
    knobs.set_faults(rate_limit_rps=5, other_traffic_rps=1_000_000)
    with fresh_session(knobs) as s:
        rs = [s.get(knobs.url + TRANSACTIONS, timeout=10) for _ in range(6)]
    assert [r.status_code for r in rs].count(429) >= 5
    for r in rs:
        if r.status_code == 429:
            assert_error(schemas, r, 429, "RATE_LIMITED")
            assert _rate_headers(r) == ("5, 5;w=1", 0, 1)
            assert r.headers["Retry-After"] == "1"
    stats = knobs.stats()
    rate = stats["rate_limit"]
    assert rate["limit"] == 5 and rate["enforced"] is True and rate["windows"] >= 1
    assert rate["other_traffic"]["refused"] > 0 and rate["other_traffic"]["requests"] >= rate["other_traffic"]["refused"]
    assert rate["lowest_remaining"] == 0
    assert stats["rate_limited"] == [r.status_code for r in rs].count(429)
    knobs.reset_requests()
    assert knobs.stats()["rate_limit"] == {"limit": 5, "enforced": True, "windows": 0,
                                           "other_traffic": {"requests": 0, "refused": 0}, "lowest_remaining": None}


def test_rate_limit_knobs_reach_the_subprocess():
    with KlarnaEmulator(DatasetSpec(payouts=2, transactions_per_payout=2), rate_limit_rps=200,
                        other_traffic_rps=150) as emu:
        assert emu.faults()["rate_limit_rps"] == 200 and emu.faults()["other_traffic_rps"] == 150
        assert "--other-traffic-rps" in emu.command()
        r = requests.get(emu.url + PAYOUTS, auth=emu.auth, timeout=10)
        assert r.status_code == 200 and r.headers["X-Ratelimit-Limit"] == "200, 200;w=1"
        # 150/s of the 200 are the checkout's: at most 50 left for the connector by the window's end
        assert int(r.headers["X-Ratelimit-Remaining"]) <= 199
        assert emu.set_faults(rate_limit_rps=3, other_traffic_rps=0.5)["rate_limit_rps"] == 3


def test_endpoint_faults_answer_every_request_of_their_endpoint(knobs, schemas):
    knobs.set_faults(endpoint_faults={"payouts": "foreign_body", "transactions": "null_items",
                                      "payout": "forbidden", "payouts_summary": "bad_request", "order": "not_found"})
    ref = knobs.dataset.payouts()[0]["payment_reference"]
    order_id = next(knobs.dataset.order_ids(include_purged=False))
    with fresh_session(knobs) as s:
        for _ in range(2):
            html = s.get(knobs.url + PAYOUTS, timeout=10)
            assert html.status_code == 200 and html.headers["Content-Type"] == "text/html"
            assert html.text.startswith("<!DOCTYPE html>") and int(html.headers["Content-Length"]) == len(html.content)
            assert _rate_headers(html)[0] == "200, 200;w=1"
            with pytest.raises(requests.exceptions.JSONDecodeError):
                html.json()
        body = s.get(knobs.url + TRANSACTIONS, params={"payment_reference": ref}, timeout=10).json()
        assert body["transactions"] is None
        assert body["pagination"] == {"count": 10, "total": 10, "offset": 0}
        forbidden = assert_error(schemas, s.get(knobs.url + f"{PAYOUTS}/{ref}", timeout=10), 403, "FORBIDDEN")
        assert forbidden["error_messages"] == ["Access to this resource is not allowed."]
        bad = assert_error(schemas, s.get(knobs.url + SUMMARY, params={"start_date": "2024-01-01",
                                                                       "end_date": "2024-02-01"}, timeout=10),
                           400, "BAD_REQUEST")
        assert bad["error_messages"] == ["start_date: must be a valid date-time"]
        assert_error(schemas, s.get(knobs.url + f"{ORDERS}/{order_id}", timeout=10), 404, "NOT_FOUND")
        # without credentials too: the fault is the answer
        assert requests.get(knobs.url + f"{ORDERS}/{order_id}", timeout=10).status_code == 404
    log = knobs.requests()
    assert [e["fault"] for e in log] == ["foreign_body", "foreign_body", "null_items", "forbidden", "bad_request",
                                         "not_found", "not_found"]
    assert knobs.stats()["faults"] == {"bad_request": 1, "foreign_body": 2, "forbidden": 1, "not_found": 2,
                                       "null_items": 1}


def test_collection_faults_reshape_collections_only(knobs, schemas):
    knobs.set_faults(endpoint_faults={"payouts": "no_pagination", "transactions": "no_pagination",
                                      "payout": "null_items", "order": "no_pagination"})
    ref = knobs.dataset.payouts()[0]["payment_reference"]
    order_id = next(knobs.dataset.order_ids(include_purged=False))
    with fresh_session(knobs) as s:
        payouts = s.get(knobs.url + PAYOUTS, params={"size": 2}, timeout=10).json()
        assert payouts == {"payouts": knobs.dataset.payouts()[:2]}
        rows = s.get(knobs.url + TRANSACTIONS, params={"payment_reference": ref}, timeout=10).json()
        assert rows == {"transactions": knobs.dataset.transactions_for(ref)}
        one = s.get(knobs.url + f"{PAYOUTS}/{ref}", timeout=10)
        assert one.status_code == 200 and one.json() == knobs.dataset.payout(ref)
        order = s.get(knobs.url + f"{ORDERS}/{order_id}", timeout=10)
        assert order.status_code == 200 and order.json() == knobs.dataset.order(order_id)
        # a collection request the API rejects is rejected as usual
        assert_error(schemas, s.get(knobs.url + PAYOUTS, params={"size": 0}, timeout=10), 400, "BAD_REQUEST")
        knobs.set_faults(fail_requests={1: "null_items"})
        knobs.reset_requests()
        body = s.get(knobs.url + PAYOUTS, params={"size": 3}, timeout=10).json()
        assert body["payouts"] is None and body["pagination"]["count"] == 3 and "next" in body["pagination"]


@pytest.mark.parametrize("endpoint,parameter", [("payouts", "start_date"), ("transactions", "payment_reference"),
                                                ("payout", "payment_reference"), ("order", "order_id")])
def test_bad_request_names_a_parameter_of_its_endpoint(knobs, schemas, endpoint, parameter):
    knobs.set_faults(endpoint_faults={endpoint: "bad_request"})
    path = {"payouts": PAYOUTS, "transactions": TRANSACTIONS, "payout": PAYOUTS + "/X", "order": ORDERS + "/X"}
    with fresh_session(knobs) as s:
        body = assert_error(schemas, s.get(knobs.url + path[endpoint], timeout=10), 400, "BAD_REQUEST")
    assert body["error_messages"][0].startswith(f"{parameter}: ")


def test_fault_precedence_request_number_then_endpoint_then_rate_limit_then_random():
    clock = FakeClock()
    config = FaultConfig(fail_requests={1: "error_500", 4: "slow"}, endpoint_faults={"order": "forbidden"},
                         rate_limit_rps=2, error_5xx=1.0)
    controller = FaultController(config, clock=clock)
    got = [controller.decide(1, "order").fault, controller.decide(2, "order").fault,
           controller.decide(3, "payouts").fault, controller.decide(4, "payouts").fault,
           controller.decide(5, "order").fault, controller.decide(6, "payouts").fault]
    # 1: the request number beats the endpoint; 2: the endpoint fault; 3: quota used up by 1 and 2 -> 429;
    # 4: the request number beats the rate limit; 5: the endpoint beats it; 6: 429 beats the random 5xx
    assert got == ["error_500", "forbidden", "rate_limit", "slow", "forbidden", "rate_limit"]
    clock.now += 1  # a new window: the random fault (error_5xx=1.0) comes last
    assert controller.decide(7, "payouts").fault in ("error_500", "error_503")


def test_endpoint_faults_are_validated(knobs):
    with pytest.raises(ValueError, match="unknown endpoint"):
        FaultConfig(endpoint_faults={"orders": "not_found"})
    with pytest.raises(ValueError, match="unknown fault"):
        FaultConfig(endpoint_faults={"order": "explode"})
    with pytest.raises(RuntimeError, match="400"):
        knobs._admin("POST", "faults", {"endpoint_faults": {"nope": "forbidden"}})
    cfg = knobs.set_faults(endpoint_faults={"order": "not_found"}, fail_requests={2: "foreign_body"})
    assert cfg["endpoint_faults"] == {"order": "not_found"} and cfg["fail_requests"] == {"2": "foreign_body"}
    assert knobs.faults() == cfg


def test_error_5xx(knobs, schemas):
    knobs.set_faults(error_5xx=1.0, fault_seed=3)
    with fresh_session(knobs) as s:
        rs = [s.get(knobs.url + PAYOUTS, timeout=10) for _ in range(12)]
    assert {r.status_code for r in rs} == {500, 503}
    for r in rs:
        assert_error(schemas, r, r.status_code)
    assert knobs.health()["status"] == "ok", "admin endpoints are exempt from faults"


def test_connection_reset(knobs):
    knobs.set_faults(connection_reset=1.0)
    with fresh_session(knobs) as s:
        with pytest.raises(requests.exceptions.ConnectionError) as ei:
            s.get(knobs.url + PAYOUTS, timeout=10)
        assert "reset" in str(ei.value).lower() or "aborted" in str(ei.value).lower()
        knobs.set_faults()
        assert s.get(knobs.url + PAYOUTS, timeout=10).status_code == 200
    log = knobs.requests()
    assert log[0]["fault"] == "connection_reset" and log[0]["status"] is None


def test_truncated_body(knobs):
    knobs.set_faults(truncated_body=1.0)
    with fresh_session(knobs) as s:
        # urllib3 reports the short body as IncompleteRead -> requests raises ChunkedEncodingError
        with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            s.get(knobs.url + PAYOUTS, timeout=10)
        knobs.set_faults()
        assert s.get(knobs.url + PAYOUTS, timeout=10).status_code == 200


def test_invalid_json(knobs):
    knobs.set_faults(invalid_json=1.0)
    with fresh_session(knobs) as s:
        r = s.get(knobs.url + TRANSACTIONS, timeout=10)
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(r.content)
        with pytest.raises(requests.exceptions.JSONDecodeError):
            r.json()


def test_slow_and_latency(knobs):
    knobs.set_faults(slow=1.0, slow_seconds=1.0)
    with fresh_session(knobs) as s:
        with pytest.raises(requests.exceptions.ReadTimeout):
            s.get(knobs.url + PAYOUTS, timeout=0.3)
    # the server answers (and logs) the slow request once slow_seconds are over: poll with a deadline
    deadline = time.monotonic() + 10
    while not any(e["fault"] == "slow" for e in knobs.requests()):
        assert time.monotonic() < deadline, "slow request never completed"
        knobs.health()
    assert [e["fault"] for e in knobs.requests()] == ["slow"]
    knobs.set_faults(latency_ms=150)
    with fresh_session(knobs) as s:
        t0 = time.monotonic()
        assert s.get(knobs.url + PAYOUTS, timeout=10).status_code == 200
        assert time.monotonic() - t0 >= 0.15
    knobs.set_faults()
    with fresh_session(knobs) as s:
        assert s.get(knobs.url + PAYOUTS, timeout=10).status_code == 200


def test_fail_requests_is_deterministic(knobs, schemas):
    knobs.set_faults(fail_requests={2: "error_500", 4: "connection_reset", 5: "rate_limit", 7: "invalid_json"})
    knobs.reset_requests()
    outcomes = []
    with fresh_session(knobs) as s:
        for _ in range(8):
            try:
                r = s.get(knobs.url + PAYOUTS, timeout=10)
                try:
                    r.json()
                    outcomes.append(r.status_code)
                except ValueError:
                    outcomes.append("badjson")
            except requests.exceptions.ConnectionError:
                outcomes.append("reset")
    assert outcomes == [200, 500, 200, "reset", 429, 200, "badjson", 200]
    log = knobs.requests()
    assert [e["n"] for e in log] == list(range(1, 9))
    assert [e["status"] for e in log] == [200, 500, 200, None, 429, 200, 200, 200]
    assert [e["fault"] for e in log] == [None, "error_500", None, "connection_reset", "rate_limit", None,
                                         "invalid_json", None]


def test_random_faults_are_reproducible(knobs):
    knobs.set_faults(error_5xx=0.3, fault_seed=11)

    def run():
        knobs.reset_requests()
        with fresh_session(knobs) as s:
            return [s.get(knobs.url + PAYOUTS, timeout=10).status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert 200 in first and {500, 503} & set(first)
    cfg = FaultConfig(error_5xx=0.3, fault_seed=11)
    predicted = [{None: 200, "error_500": 500, "error_503": 503}[cfg.draw(n)] for n in range(1, 31)]
    assert first == predicted
    knobs.set_faults(error_5xx=0.3, fault_seed=12)
    assert run() != first


def test_request_log_and_stats(knobs):
    with fresh_session(knobs) as s:
        s.get(knobs.url + PAYOUTS, params={"size": 2, "offset": 4, "currency_code": "EUR"}, timeout=10)
        s.get(knobs.url + TRANSACTIONS, params={"size": 3}, timeout=10)
        s.get(knobs.url + PAYOUTS + "/NOPE", timeout=10)
        s.get(knobs.url + PAYOUTS, params={"size": 900}, timeout=10)
        requests.get(knobs.url + PAYOUTS, timeout=10)  # no auth
        knobs.health()
        knobs.stats()
    log = knobs.requests()
    assert [e["n"] for e in log] == [1, 2, 3, 4, 5]
    assert log[0] == {"n": 1, "method": "GET", "path": PAYOUTS,
                      "query": {"size": "2", "offset": "4", "currency_code": "EUR"}, "status": 200,
                      "fault": None, "endpoint": "payouts"}
    assert [e["status"] for e in log] == [200, 200, 404, 400, 401]
    assert [e["path"] for e in log][1:3] == [TRANSACTIONS, PAYOUTS + "/NOPE"]
    stats = knobs.stats()
    assert stats["total"] == 5
    assert stats["by_status"] == {"200": 2, "400": 1, "401": 1, "404": 1}
    assert stats["rate_limited"] == 0
    assert stats["by_endpoint"] == {"payout": 1, "payouts": 3, "transactions": 1}
    knobs.reset_requests()
    assert knobs.requests() == [] and knobs.stats()["total"] == 0


def test_faults_endpoint_validates(knobs):
    with pytest.raises(RuntimeError, match="400"):
        knobs._admin("POST", "faults", {"error_5xx": 2})
    with pytest.raises(RuntimeError, match="400"):
        knobs._admin("POST", "faults", {"no_such_knob": 1})
    with pytest.raises(RuntimeError, match="400"):
        knobs._admin("POST", "faults", {"fail_requests": {"1": "explode"}})
    cfg = knobs.set_faults(latency_ms=5, fail_requests={3: "slow"})
    assert cfg["latency_ms"] == 5 and cfg["fail_requests"] == {"3": "slow"}
    assert knobs.faults() == cfg


# --------------------------------------------------------------------------- scale / memory

def test_large_dataset_is_served_with_flat_memory():
    spec = DatasetSpec(payouts=4000, transactions_per_payout=250)
    with KlarnaEmulator(spec) as emu, requests.Session() as s:
        s.auth = emu.auth
        u = emu.url
        page = s.get(u + PAYOUTS, params={"size": 500}, timeout=30).json()
        assert page["pagination"]["total"] == 4000 and len(page["payouts"]) == 500
        newest, oldest_page = page["payouts"][0], s.get(
            u + PAYOUTS, params={"size": 500, "offset": 3500}, timeout=30).json()["payouts"]
        oldest = oldest_page[-1]
        for p in (newest, oldest):
            rows = s.get(u + TRANSACTIONS, params={"payment_reference": p["payment_reference"], "size": 250},
                         timeout=30).json()["transactions"]
            assert len(rows) == 250
            assert sum(r["amount"] for r in rows if r["type"] == "SALE") == p["totals"]["sale_amount"]
        base = rss_kb(emu.pid)
        # stream 100 payouts' worth of rows (more than the 64-payout cache) from the global listing
        last = s.get(u + TRANSACTIONS, params={"size": 500, "offset": 999_500}, timeout=30).json()
        assert last["pagination"]["total"] == 1_000_000 and last["pagination"]["count"] == 500
        assert "next" not in last["pagination"]
        for off in range(0, 50_000, 500):
            body = s.get(u + TRANSACTIONS, params={"size": 500, "offset": off}, timeout=30).json()
            assert body["pagination"]["count"] == 500
        order_id = body["transactions"][0]["order_id"]
        assert s.get(u + f"{ORDERS}/{order_id}", timeout=30).status_code == 200
        summary = s.get(u + SUMMARY, params={"start_date": "2020-01-01", "end_date": "2040-01-01"},
                        timeout=60).json()
        assert len(summary) == 3
        peak = rss_kb(emu.pid)
        assert peak < 150 * 1024, f"server RSS {peak} kB"
        assert peak - base < 80 * 1024, f"RSS grew from {base} kB to {peak} kB"


# --------------------------------------------------------------------------- process lifecycle

def test_startup_ready_line_and_sigterm_shutdown():
    emu = KlarnaEmulator(DatasetSpec(payouts=3, transactions_per_payout=4), latency_ms=0, rate_limit_rps=0,
                         retry_after=False, error_5xx=0.0)
    t0 = time.monotonic()
    emu.start()
    try:
        assert time.monotonic() - t0 < 10
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emu.url)
        assert emu.health()["payouts"] == 3
        cfg = emu.config(start_date="2023-06-01T00:00:00Z", extra=1)
        assert cfg["base_url_override"] == emu.url and cfg["username"] == "emulator" and cfg["extra"] == 1
        assert emu.config()["start_date"] == "2023-12-31T00:00:00Z"
        assert emu.config()["region"] == "eu" and emu.config()["playground"] is False
    finally:
        t1 = time.monotonic()
        code = emu.stop()
    assert code == 0 and time.monotonic() - t1 < emu.stop_timeout
    assert emu.process.poll() == 0
    assert emu.extra_stdout == [], "exactly one line on stdout"
    assert emu.stop() == 0, "stop() is idempotent"


def test_emulator_exits_when_its_parent_goes_away():
    emu = KlarnaEmulator(DatasetSpec(payouts=2, transactions_per_payout=2)).start()
    try:
        emu.process.stdin.close()  # what the OS does when the test process dies
        assert emu.process.wait(timeout=10) == 0
    finally:
        emu.stop()


@contextlib.contextmanager
def cli_emulator(*flags):
    """``python -m klarna_emulator *flags`` as a subprocess: yields (process, its parsed ready line);
    killed on the way out if the test did not stop it."""
    import selectors

    proc = subprocess.Popen([sys.executable, "-m", "klarna_emulator", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=10), "no ready line within 10 s"
        yield proc, json.loads(proc.stdout.readline())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_sigint_exits_zero_and_cli_flags():
    flags = ["--host", "127.0.0.1", "--port", "0", "--seed", "1",
             "--payouts", "5", "--transactions-per-payout", "4", "--currencies", "EUR,SEK,USD",
             "--first-payout-date", "2024-01-01T00:00:00Z", "--username", "emulator", "--password",
             "emulator-secret", "--latency-ms", "0", "--rate-limit-rps", "0", "--purged-order-ratio", "0",
             "--no-retry-after", "--error-5xx", "0.1", "--fail-request", "1=error_503", "--grow", "2:1"]
    with cli_emulator(*flags) as (proc, ready):
        url = ready["url"]
        assert requests.get(url + PAYOUTS, auth=("emulator", "emulator-secret"), timeout=10).status_code == 503
        health = requests.get(url + "/_emulator/health", timeout=10).json()
        assert health["payouts"] == 8 and health["growth"] == [[2, 1]]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == b""


def test_cli_rejects_bad_arguments():
    for bad in (["--payouts", "-1"], ["--error-5xx", "1.5"], ["--fail-request", "2=explode"], ["--currencies", ""],
                ["--rate-limit-rps", "2.5"], ["--other-traffic-rps", "-1"], ["--endpoint-fault", "orders=not_found"],
                ["--endpoint-fault", "order=explode"], ["--endpoint-fault", "order"]):
        res = subprocess.run([sys.executable, "-m", "klarna_emulator", *bad], capture_output=True,
                             timeout=20)
        assert res.returncode == 2, (bad, res)
        assert res.stdout == b""


# --------------------------------------------------------------------------- golden reading

def _golden_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("klarna_emulator_golden", HERE.parent / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_golden_reading_reaches_every_endpoint_and_is_reproducible():
    """emulator/golden.py is the byte-for-byte proof of refactors (run with --against REV): its reading
    must keep running against the package, reach every endpoint, and hash the same bytes twice."""
    golden = _golden_module()
    specs = [s for s in golden.golden_specs() if s[0] in ("growth", "edge")]
    first, second = golden.digest_lines(specs), golden.digest_lines(specs)
    assert first == second
    assert len(first) == 2 * len(golden.ENDPOINTS) + 1
    assert all(int(line.split()[2]) > 0 for line in first[:-1]), first
    assert len({line.split()[3] for line in first[:-1]}) == len(first) - 1, "every digest covers other answers"


# --------------------------------------------------------------------------- TLS

def test_tls_serves_https_that_default_verification_refuses():
    with KlarnaEmulator(DatasetSpec(payouts=4, transactions_per_payout=3), tls=True) as emu:
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", emu.url)
        assert emu.health()["payouts"] == 4, "the admin client trusts the emulator's own certificate"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(emu.url + PAYOUTS, auth=emu.auth, timeout=10)
        with requests.Session() as s:
            s.auth = emu.auth  # verify per request: REQUESTS_CA_BUNDLE would override a session's verify
            r = s.get(emu.url + PAYOUTS, params={"size": 2}, timeout=10, verify=emu.certificate)
            assert r.status_code == 200 and r.headers["X-Ratelimit-Limit"] == "200, 200;w=1"
            assert r.json()["pagination"]["next"].startswith(emu.url + PAYOUTS + "?")
            second = s.get(r.json()["pagination"]["next"], timeout=10, verify=emu.certificate)
            assert second.json()["payouts"] == emu.dataset.payouts()[2:]
        assert emu.stats()["total"] == 2, "the refused handshake never became a request"
        certificate = emu.certificate
        assert os.path.isfile(certificate)
    assert not os.path.exists(certificate), "the certificate is removed when the emulator stops"


def test_tls_without_openssl_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no openssl on it (the interpreter is started by its full path)
    res = subprocess.run([sys.executable, "-m", "klarna_emulator", "--tls"], capture_output=True, timeout=20)
    assert res.returncode == 2 and res.stdout == b""
    assert b"needs the openssl command line tool" in res.stderr
    with pytest.raises(EmulatorStartError, match="openssl"):
        KlarnaEmulator(DatasetSpec(payouts=1, transactions_per_payout=1), tls=True).start()


def test_cli_flags_of_the_rate_limit_endpoint_faults_empty_payouts_and_tls():
    import ssl
    import urllib.request

    flags = ["--payouts", "6", "--transactions-per-payout", "3", "--empty-payouts", "2", "--rate-limit-rps", "4",
             "--other-traffic-rps", "0.5", "--endpoint-fault", "order=forbidden",
             "--endpoint-fault", "payouts=no_pagination", "--tls"]
    with cli_emulator(*flags) as (proc, ready):
        url, certificate = ready["url"], ready["certificate"]
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=certificate)

        def admin(path):
            with urllib.request.urlopen(url + "/_emulator/" + path, context=context, timeout=10) as resp:
                return json.loads(resp.read())

        faults = admin("faults")
        assert faults["rate_limit_rps"] == 4 and faults["other_traffic_rps"] == 0.5
        assert faults["endpoint_faults"] == {"order": "forbidden", "payouts": "no_pagination"}
        assert admin("spec")["spec"]["empty_payouts"] == 2
        auth = ("emulator", "emulator-secret")
        r = requests.get(url + PAYOUTS, auth=auth, timeout=10, verify=certificate)
        assert r.status_code == 200 and set(r.json()) == {"payouts"}
        assert r.headers["X-Ratelimit-Limit"] == "4, 4;w=1"
        assert requests.get(url + ORDERS + "/x", auth=auth, timeout=10, verify=certificate).status_code == 403
        assert admin("health")["transactions"] == 4 * 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not os.path.exists(certificate)
