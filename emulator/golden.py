"""Golden digest of the emulator's answers: proof that a change to ``klarna_emulator`` serves the same bytes.

The connector's tests pin the emulator's data (``integration_tests/acceptance/expected_records.jsonl``
and the exact-sync tests), so a refactor of the package must not change one byte of what it serves for
a given ``DatasetSpec`` and growth. This script reads a fixed set of answers from an in-process server
and prints one SHA-256 per (spec, endpoint), then one over everything:

    .venv/bin/python emulator/golden.py                  # the digests of the installed package
    .venv/bin/python emulator/golden.py --against REV    # compare with the package as it is at git REV

``--against`` exports ``emulator/klarna_emulator`` at REV into a temporary directory, runs this same
reading there in a subprocess, and exits 1 (printing the lines that differ) unless both agree.

The reading, for every spec below (and again after each growth step of the specs that grow):

* ``payouts``: ``GET /settlements/v1/payouts`` walked with ``size=7`` along ``pagination.next``; once
  with ``size=500``; per currency from the third day on with ``size=5``; a window ending on the fifth day;
* ``payout``: ``GET /settlements/v1/payouts/{ref}`` for every payout and for an unknown reference;
* ``payouts_summary``: ``GET /settlements/v1/payouts/summary`` over the whole range, over every calendar
  month the payouts span, per currency, over a window without payouts and without its required dates;
* ``transactions``: ``GET /settlements/v1/transactions`` walked with ``size=97``; per payout with
  ``size=500``; the first three payouts walked with ``size=7``; by ``order_id`` for every 10th order;
  for an unknown reference;
* ``order``: ``GET /ordermanagement/v1/orders/{id}`` for every order id the transactions name (purged
  ones answer 404) and for an unknown id.

What is hashed per answer: the request path and query, the status, the ``Content-Type`` and the body,
with the two things that legitimately vary per run made fixed: requests send ``Host: emulator.invalid``
(pagination links name the host they were asked on) and the random correlation id of an error body is
replaced by ``-``. Standard library only; uses ``Dataset``, ``DatasetSpec`` and ``server.start_server``,
whose signatures every version of the package keeps.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import http.client
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from urllib.parse import urlencode, urlsplit

HOST_HEADER = "emulator.invalid"
USERNAME, PASSWORD = "golden", "golden-secret"
PAYOUTS = "/settlements/v1/payouts"
SUMMARY = "/settlements/v1/payouts/summary"
TRANSACTIONS = "/settlements/v1/transactions"
ORDERS = "/ordermanagement/v1/orders"
ENDPOINTS = ("payouts", "payout", "payouts_summary", "transactions", "order")


def golden_specs():
    """(label, DatasetSpec, growth at construction, growth steps applied later through /_emulator/grow)."""
    from klarna_emulator import DatasetSpec

    return [
        ("default", DatasetSpec(), (), ()),
        ("purged", DatasetSpec(purged_order_ratio=0.1), (), ()),
        ("growth", DatasetSpec(seed=7, payouts=12, transactions_per_payout=15), [(3, 2)], [(2, 1), (0, 3)]),
        ("currencies", DatasetSpec(seed=3, payouts=40, transactions_per_payout=25,
                                   currencies=("EUR", "SEK", "USD", "GBP", "NOK", "DKK", "CHF", "AUD", "PLN",
                                               "CAD", "NZD"),
                                   first_payout_date="2023-11-20T00:00:00Z", identical_rows_per_payout=0,
                                   merchant_id="M999", purged_order_ratio=0.3), (), ()),
        ("edge", DatasetSpec(seed=5, payouts=6, transactions_per_payout=3, identical_rows_per_payout=2), (), ()),
        ("wide", DatasetSpec(seed=9, payouts=6, transactions_per_payout=300, currencies=("GBP",)), (), ()),
    ]


class Reader:
    """Sends the reading's requests over one keep-alive connection and hashes each answer per endpoint."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        self.headers = {"Host": HOST_HEADER, "Authorization": f"Basic {token}"}
        self.digests = {name: hashlib.sha256() for name in ENDPOINTS}
        self.counts = dict.fromkeys(ENDPOINTS, 0)

    def raw(self, method: str, target: str, headers: dict) -> tuple:
        self.conn.request(method, target, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.getheader("Klarna-Correlation-Id"), resp.read()

    def get(self, endpoint: str, path: str, params=None):
        """GET and hash one API answer; returns the parsed body."""
        target = path + ("?" + urlencode(params) if params else "")
        status, content_type, cid, body = self.raw("GET", target, self.headers)
        if status >= 400 and cid:
            body = body.replace(cid.encode(), b"-")
        digest = self.digests[endpoint]
        for part in (target.encode(), str(status).encode(), (content_type or "").encode(), body):
            digest.update(len(part).to_bytes(8, "big") + part)
        self.counts[endpoint] += 1
        return json.loads(body)

    def walk(self, endpoint: str, path: str, params: dict, key: str) -> list:
        rows = []
        body = self.get(endpoint, path, params)
        for _ in range(100_000):
            rows.extend(body[key])
            nxt = body["pagination"].get("next")
            if not nxt:
                return rows
            link = urlsplit(nxt)
            assert link.netloc == HOST_HEADER, nxt
            body = self.get(endpoint, f"{link.path}?{link.query}")  # the link exactly as served
        raise AssertionError("pagination did not end")

    def grow(self, new_payouts: int, late_payouts: int):
        payload = json.dumps({"new_payouts": new_payouts, "late_payouts": late_payouts})
        self.conn.request("POST", "/_emulator/grow", body=payload, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status


def day_after(date_time: str, days: int) -> str:
    """Midnight UTC ``days`` days after the day of ``date_time`` (``YYYY-MM-DDT...``)."""
    day = datetime.date.fromisoformat(date_time[:10]) + datetime.timedelta(days=days)
    return f"{day.isoformat()}T00:00:00Z"


def months_between(first: str, last: str) -> list:
    """[(start, end)] of every calendar month from ``first``'s to ``last``'s (``YYYY-MM-...`` strings)."""
    year, month = int(first[:4]), int(first[5:7])
    out = []
    while (year, month) <= (int(last[:4]), int(last[5:7])):
        nxt = (year + month // 12, month % 12 + 1)
        out.append((f"{year:04d}-{month:02d}-01T00:00:00Z", f"{nxt[0]:04d}-{nxt[1]:02d}-01T00:00:00Z"))
        year, month = nxt
    return out


def read_everything(reader: Reader, spec):
    payouts = reader.walk("payouts", PAYOUTS, {"size": 7}, "payouts")
    reader.get("payouts", PAYOUTS, {"size": 500})
    first_ts = min(p["payout_date"] for p in payouts) if payouts else spec.first_payout_date
    last_ts = max(p["payout_date"] for p in payouts) if payouts else spec.first_payout_date
    for currency in spec.currencies:
        reader.walk("payouts", PAYOUTS, {"start_date": day_after(first_ts, 2), "currency_code": currency, "size": 5},
                    "payouts")
    reader.get("payouts", PAYOUTS, {"end_date": day_after(first_ts, 4), "size": 500})

    for p in payouts:
        reader.get("payout", f"{PAYOUTS}/{p['payment_reference']}")
    reader.get("payout", f"{PAYOUTS}/NOSUCHREF")

    reader.get("payouts_summary", SUMMARY, {"start_date": "2000-01-01T00:00:00Z", "end_date": "2100-01-01T00:00:00Z"})
    for start, end in months_between(first_ts, last_ts):
        reader.get("payouts_summary", SUMMARY, {"start_date": start, "end_date": end})
    for currency in spec.currencies:
        reader.get("payouts_summary", SUMMARY, {"start_date": "2000-01-01", "end_date": "2100-01-01",
                                                "currency_code": currency})
    reader.get("payouts_summary", SUMMARY, {"start_date": "2001-01-01", "end_date": "2001-02-01"})
    reader.get("payouts_summary", SUMMARY, {})

    rows = reader.walk("transactions", TRANSACTIONS, {"size": 97}, "transactions")
    for p in payouts:
        reader.get("transactions", TRANSACTIONS, {"payment_reference": p["payment_reference"], "size": 500})
    for p in payouts[:3]:
        reader.walk("transactions", TRANSACTIONS, {"payment_reference": p["payment_reference"], "size": 7},
                    "transactions")
    order_ids = list(dict.fromkeys(r["order_id"] for r in rows))
    for order_id in order_ids[::10]:
        reader.get("transactions", TRANSACTIONS, {"order_id": order_id, "size": 500})
    reader.get("transactions", TRANSACTIONS, {"payment_reference": "NOSUCHREF"})

    for order_id in order_ids:
        reader.get("order", f"{ORDERS}/{order_id}")
    reader.get("order", f"{ORDERS}/00000000-0000-4000-8000-000000000000")


def digest_lines(specs=None) -> list:
    """One line per (spec, endpoint): ``label endpoint answers sha256``, then ``all - - sha256``."""
    from klarna_emulator import Dataset
    from klarna_emulator.server import start_server

    lines = []
    for label, spec, initial_growth, later_growth in specs or golden_specs():
        server, thread = start_server(Dataset(spec, growth=initial_growth), USERNAME, PASSWORD)
        try:
            reader = Reader(server.server_address[1])
            read_everything(reader, spec)
            for step in later_growth:
                reader.grow(*step)
                read_everything(reader, spec)
            reader.conn.close()
        finally:
            server.state.shutdown_event.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
        lines.extend(f"{label} {name} {reader.counts[name]} {reader.digests[name].hexdigest()}" for name in ENDPOINTS)
    lines.append(f"all - - {hashlib.sha256(chr(10).join(lines).encode()).hexdigest()}")
    return lines


def lines_at_revision(rev: str) -> list:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        archive = subprocess.run(["git", "-C", repo, "archive", "--format=tar", rev, "emulator/klarna_emulator"],
                                 check=True, capture_output=True).stdout
        archive_path = os.path.join(tmp, "old.tar")
        with open(archive_path, "wb") as f:
            f.write(archive)
        with tarfile.open(archive_path) as tar:
            tar.extractall(tmp)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--package-root", os.path.join(tmp, "emulator")],
                             check=True, capture_output=True, text=True, timeout=600).stdout
    return out.splitlines()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", metavar="REV", help="compare with the package as it is at this git revision")
    p.add_argument("--package-root", metavar="DIR", help=argparse.SUPPRESS)  # import klarna_emulator from DIR
    args = p.parse_args(argv)
    if args.package_root:
        sys.path.insert(0, args.package_root)
        import klarna_emulator

        assert os.path.dirname(os.path.dirname(os.path.abspath(klarna_emulator.__file__))) == args.package_root
    if not args.against:
        print("\n".join(digest_lines()))
        return 0
    old, new = lines_at_revision(args.against), digest_lines()
    differ = [(a, b) for a, b in zip(old, new) if a != b] + [(a, "") for a in old[len(new):]] + \
             [("", b) for b in new[len(old):]]
    for a, b in differ:
        print(f"{args.against}: {a}\nnow:  {b}")
    print(f"{len(new)} digests, {sum(int(x.split()[2]) for x in new[:-1])} answers: "
          + ("identical" if not differ else f"{len(differ)} differ"))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
