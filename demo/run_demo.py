"""The one-command demo: sync Klarna settlements into a local DuckDB file and print a report.

    python demo/run_demo.py [--db klarna.duckdb] [--config secrets/config.json] [--grow N]

Without a config (neither --config nor KLARNA_CONFIG) it starts the bundled Klarna emulator with a
fixed, seeded dataset and syncs from it; with one it syncs that Klarna account. The sync runs the
installed `source-klarna` connector through PyAirbyte into `ab.DuckDBCache`, which keeps the
incremental state inside the same DuckDB file (table `_airbyte_state`): a rerun reads only what is
new (plus the connector's lookback window) and the demo says how many rows were new per stream.

After the sync it runs `dbt build` on the dbt_klarna package (dbt-duckdb, the demo's extra) into the
schema `dbt_klarna` of the same file: staging views, the marts (payout reconciliation, fees, order
settlement) and their tests. The profile, dbt's target and logs live in a temporary directory. The
report reads the marts; an HTML page with charts is written next to the DuckDB file.

`--grow N` (emulator only) adds N new payouts and one late payout (dated before the newest one) to
the emulator's dataset before syncing. The growth steps are kept in `<db>.emulator.json` and replayed
when the emulator starts next time, so the emulator serves the same data as long as that file lives.
"""

from __future__ import annotations

import os

# PyAirbyte reads these at import: no connector registry look-up, no telemetry.
os.environ["AIRBYTE_OFFLINE_MODE"] = "1"
os.environ["DO_NOT_TRACK"] = "1"

import argparse
import base64
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

import duckdb  # noqa: E402

import report as demo_report  # noqa: E402

SOURCE_NAME = "source-klarna"
STREAMS = demo_report.STREAMS
ORIGIN_TABLE = "_klarna_demo_origin"
DEFAULT_SPEC = {"seed": 1, "payouts": 120, "transactions_per_payout": 60}
GROW_LATE_PAYOUTS = 1
DBT_PROJECT = REPO / "dbt_klarna"
DBT_TIMEOUT_S = 900


# Strings no message of the demo may show (the password, its Basic token): filled as they are known.
SECRETS: List[str] = []


class DemoError(Exception):
    """A problem the user can fix; printed as one message, exit code 2."""


def log(message: str = "") -> None:
    print(message, flush=True)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- helpers


def connector_executable() -> Path:
    """The `source-klarna` console script installed next to this interpreter."""
    name = "source-klarna.exe" if os.name == "nt" else "source-klarna"
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise DemoError(
            f"{path} not found: install the connector into this environment first "
            "(`make install`, or `pip install '.[demo]'`)."
        )
    return path


def secrets_of(config: Mapping[str, Any]) -> List[str]:
    password = config.get("password")
    if not isinstance(password, str) or not password:
        return []
    token = base64.b64encode(f"{config.get('username', '')}:{password}".encode()).decode()
    return [password, token]


def redact(text: str, secrets: List[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "****")
    return text


def read_config(path: str) -> Dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DemoError(f"config file {path} not found (see README: a JSON file with username and password).") from None
    except json.JSONDecodeError as error:
        raise DemoError(f"config file {path} is not valid JSON: {error.msg} at line {error.lineno}.") from None
    if not isinstance(config, dict):
        raise DemoError(f"config file {path} must hold a JSON object.")
    return config  # what else is wrong with it, the connector's check says (sync(check_first=True))


def klarna_endpoint(config: Mapping[str, Any]) -> str:
    """Which Klarna the config reaches (not who: a rotated API key is the same account)."""
    if config.get("base_url_override"):
        return f"Klarna API at {config['base_url_override']}"
    return f"Klarna API, region {config.get('region') or 'eu'}" + (" (playground)" if config.get("playground") else "")


def db_status(db_path: Path) -> Tuple[bool, Optional[str]]:
    """(whether the file holds incremental state of this connector, the origin recorded in it)."""
    if not db_path.exists():
        return False, None
    con = duckdb.connect(str(db_path))
    try:
        has_state = False
        if demo_report.table_exists(con, "_airbyte_state"):
            has_state = bool(
                con.execute("SELECT count(*) FROM main._airbyte_state WHERE source_name = ?", [SOURCE_NAME]).fetchone()[0]
            )
        origin = None
        if demo_report.table_exists(con, ORIGIN_TABLE):
            row = con.execute(f"SELECT origin FROM main.{ORIGIN_TABLE} LIMIT 1").fetchone()
            origin = row[0] if row else None
        return has_state, origin
    finally:
        con.close()


def db_counts(db_path: Path, streams: Sequence[str]) -> Dict[str, int]:
    """Row count of each stream's table (0 for a table not there yet)."""
    if not db_path.exists():
        return {name: 0 for name in streams}
    con = duckdb.connect(str(db_path))
    try:
        return demo_report.table_counts(con, streams)
    finally:
        con.close()


def record_origin(db_path: Path, origin: str) -> None:
    con = duckdb.connect(str(db_path))
    try:
        con.execute(f"CREATE OR REPLACE TABLE main.{ORIGIN_TABLE} (origin VARCHAR, recorded_at TIMESTAMPTZ)")
        con.execute(f"INSERT INTO main.{ORIGIN_TABLE} VALUES (?, now())", [origin])
    finally:
        con.close()


# ---------------------------------------------------------------------------------- emulator state


def emulator_state_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".emulator.json")


def load_emulator_state(db_path: Path, requested_spec: Dict[str, Any]) -> Tuple[Dict[str, Any], List[List[int]]]:
    """The emulator dataset's spec and growth steps, from `<db>.emulator.json` if it exists."""
    path = emulator_state_path(db_path)
    if not path.exists():
        return dict(requested_spec), []
    try:
        saved = json.loads(path.read_text())
        spec, growth = dict(saved["spec"]), [[int(n), int(late)] for n, late in saved.get("growth", [])]
    except (ValueError, KeyError, TypeError) as error:
        raise DemoError(f"{path} is damaged ({error}); delete it together with {db_path} to start over.") from None
    for key, value in requested_spec.items():
        if key in spec and spec[key] != value and value != DEFAULT_SPEC.get(key):
            raise DemoError(
                f"{db_path} was synced from an emulator with {key}={spec[key]}, not {value}: "
                f"use another --db, or delete {db_path} and {path}."
            )
    return spec, growth


def save_emulator_state(db_path: Path, spec: Dict[str, Any], growth: List[List[int]]) -> None:
    path = emulator_state_path(db_path)
    payload = {
        "about": "Klarna emulator dataset behind this DuckDB file: spec + growth steps [new, late], replayed in order.",
        "spec": spec,
        "growth": growth,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ sync


@dataclasses.dataclass
class SyncOutcome:
    before: Dict[str, int]
    after: Dict[str, int]
    records_read: int
    incremental: bool
    seconds: float

    @property
    def new_rows(self) -> Dict[str, int]:
        return {name: self.after.get(name, 0) - self.before.get(name, 0) for name in self.after}


def sync(config: Dict[str, Any], db_path: Path, origin: str, check_first: bool = False) -> SyncOutcome:
    has_state, saved_origin = db_status(db_path)
    if saved_origin is not None and saved_origin != origin:
        raise DemoError(
            f"{db_path} holds data (and incremental state) synced from {saved_origin}, not from {origin}: "
            "use another --db, or delete the file to start over."
        )
    import airbyte as ab

    log(
        "Sync: incremental, from the state saved in the DuckDB file by the previous run"
        if has_state
        else "Sync: first run, full history"
    )
    cache_dir = Path(tempfile.mkdtemp(prefix="klarna-demo-"))
    started = time.monotonic()
    cache = None
    try:
        source = ab.get_source(SOURCE_NAME, config=config, local_executable=str(connector_executable()))
        if check_first:
            # One request tells a wrong key pair or region apart from a sync that fails on its way.
            try:
                source.check()
            except ab.exceptions.AirbyteConnectorCheckFailedError as error:
                reason = (getattr(error, "context", None) or {}).get("failure_reason") or str(error)
                raise DemoError(f"Klarna did not accept the config: {reason}") from None
        source.select_all_streams()
        selected = source.get_selected_streams()
        streams = list(STREAMS) + sorted(name for name in selected if name not in STREAMS)
        before = db_counts(db_path, streams)
        cache = ab.DuckDBCache(db_path=str(db_path), cache_dir=cache_dir)
        result = source.read(cache=cache)
        records_read = int(getattr(result, "processed_records", 0) or 0)
    finally:
        if cache is not None:
            cache.close()
        shutil.rmtree(cache_dir, ignore_errors=True)
    seconds = time.monotonic() - started
    record_origin(db_path, origin)
    after = db_counts(db_path, streams)
    return SyncOutcome(before=before, after=after, records_read=records_read, incremental=has_state, seconds=seconds)


def print_outcome(outcome: SyncOutcome) -> None:
    log()
    log(f"Synced in {outcome.seconds:.1f} s: read {outcome.records_read:,} records from Klarna.")
    log("New rows: " + ", ".join(f"{name} +{n:,}" for name, n in outcome.new_rows.items()))


# ------------------------------------------------------------------------------------------- dbt


@dataclasses.dataclass
class DbtOutcome:
    returncode: int
    seconds: float
    counts: Dict[str, int]  # status -> nodes (pass, error, fail, skipped, success, warn)
    failed: List[Tuple[str, str, str]]  # (node name, status, message) of every node that did not succeed
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def dbt_outcome(returncode: int, seconds: float, output: str, results_path: Path, redact=str) -> DbtOutcome:
    """The outcome of a dbt run from its target/run_results.json (each message through `redact`)."""
    counts: Dict[str, int] = {}
    failed: List[Tuple[str, str, str]] = []
    if results_path.exists():
        for result in json.loads(results_path.read_text()).get("results", []):
            status = str(result.get("status"))
            counts[status] = counts.get(status, 0) + 1
            message, unique_id = redact(str(result.get("message") or "")), str(result.get("unique_id", ""))
            if status not in ("success", "pass"):
                parts = unique_id.split(".")
                failed.append((parts[2] if len(parts) > 2 else unique_id, status, message))
    return DbtOutcome(returncode, seconds, counts, failed, output)


def dbt_executable() -> Path:
    name = "dbt.exe" if os.name == "nt" else "dbt"
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise DemoError(f"{path} not found: install the demo's extra (`pip install '.[demo]'`, it brings dbt-duckdb).")
    return path


def dbt_profile(db_path: Path, schema: str = demo_report.DBT_SCHEMA) -> str:
    """A dbt-duckdb profile named `klarna` (dbt_klarna's `profile:`) on the DuckDB file."""
    return (
        "klarna:\n"
        "  target: demo\n"
        "  outputs:\n"
        "    demo:\n"
        "      type: duckdb\n"
        f"      path: {json.dumps(str(db_path))}\n"
        f"      schema: {schema}\n"
        "      threads: 1\n"
    )


def dbt_vars(db_path: Path, source_schema: str = "main") -> Dict[str, Any]:
    """Where PyAirbyte put the streams (schema `main`), and whether pending_transactions and disputes
    are there (a connector before 2.0.0 has neither; a sync with no dispute writes no disputes table)."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        has_pending = demo_report.table_exists(con, "pending_transactions")
        has_disputes = demo_report.table_exists(con, "disputes")
    finally:
        con.close()
    return {"klarna_schemas": [source_schema], "klarna__using_pending_transactions": has_pending, "klarna__using_disputes": has_disputes}


def run_dbt(
    db_path: Path,
    command: Sequence[str] = ("build",),
    extra_vars: Optional[Mapping[str, Any]] = None,
    timeout: float = DBT_TIMEOUT_S,
    echo: bool = True,
) -> DbtOutcome:
    """Run `dbt <command>` on dbt_klarna against the DuckDB file; dbt's own files (profile, target,
    logs) in a temporary directory, removed afterwards. Never raises for failing models or tests:
    the outcome lists them."""
    import subprocess

    variables = {**dbt_vars(db_path), **(extra_vars or {})}
    work = Path(tempfile.mkdtemp(prefix="klarna-dbt-"))
    started = time.monotonic()
    try:
        (work / "profiles.yml").write_text(dbt_profile(db_path))
        env = {
            **os.environ,
            "DBT_PROFILES_DIR": str(work),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DBT_VERSION_CHECK": "false",
            "DO_NOT_TRACK": "1",
            "DBT_USE_COLORS": "false",
        }
        args = [
            str(dbt_executable()), "--no-use-colors", "--log-format", "text", *command,
            "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(work),
            "--target-path", str(work / "target"), "--log-path", str(work / "logs"),
            "--vars", json.dumps(variables),
        ]
        try:
            proc = subprocess.run(
                args, cwd=str(work), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise DemoError(f"dbt {' '.join(command)} did not finish within {timeout:.0f} s") from None
        output = proc.stdout or ""
        if echo:
            for line in output.splitlines():
                progress("  dbt | " + line)
        return dbt_outcome(proc.returncode, time.monotonic() - started, output, work / "target" / "run_results.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_models(db_path: Path) -> DbtOutcome:
    log()
    log(f"dbt build: the dbt_klarna package into schema `{demo_report.DBT_SCHEMA}` of {db_path.name} ...")
    outcome = run_dbt(db_path)
    summary = ", ".join(f"{status} {n}" for status, n in sorted(outcome.counts.items())) or "no results"
    log(f"dbt build {'succeeded' if outcome.ok else 'FAILED'} in {outcome.seconds:.1f} s: {summary}")
    for name, status, message in outcome.failed:
        log(f"  {status.upper()}: {name}" + (f" ({message})" if message else ""))
    if not outcome.counts:
        log("  " + "\n  ".join(outcome.output.strip().splitlines()[-15:]))
    return outcome


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python demo/run_demo.py",
        description="Sync Klarna settlements into a local DuckDB file and print a reconciliation report.",
    )
    parser.add_argument("--db", default="klarna.duckdb", help="DuckDB file to sync into (default: ./klarna.duckdb)")
    parser.add_argument(
        "--config",
        default=os.environ.get("KLARNA_CONFIG") or None,
        help="connector config JSON of a real Klarna account (default: $KLARNA_CONFIG; none = the bundled emulator)",
    )
    parser.add_argument(
        "--grow",
        type=int,
        default=0,
        metavar="N",
        help="emulator only: add N new payouts and one late payout before syncing, to show an incremental sync",
    )
    emulator = parser.add_argument_group("emulator dataset (used when the DuckDB file is first created)")
    emulator.add_argument("--seed", type=int, default=DEFAULT_SPEC["seed"])
    emulator.add_argument("--payouts", type=int, default=DEFAULT_SPEC["payouts"])
    emulator.add_argument("--transactions-per-payout", type=int, default=DEFAULT_SPEC["transactions_per_payout"])
    emulator.add_argument(
        "--unreconciled-payouts",
        type=int,
        default=0,
        metavar="N",
        help="the N oldest payouts' settlement_amount is off by 100 minor units: shows a payout that does not reconcile",
    )
    args = parser.parse_args(argv)
    if args.grow < 0:
        parser.error("--grow must be 0 or more")
    if args.grow and args.config:
        parser.error("--grow only applies to the bundled emulator: drop --config / KLARNA_CONFIG")
    return args


def run_with_emulator(args: argparse.Namespace, db_path: Path) -> int:
    from klarna_emulator import DatasetSpec, KlarnaEmulator

    requested = {"seed": args.seed, "payouts": args.payouts, "transactions_per_payout": args.transactions_per_payout}
    if args.unreconciled_payouts:
        requested["unreconciled_payouts"] = args.unreconciled_payouts
    spec_fields, growth = load_emulator_state(db_path, requested)
    spec = DatasetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_fields.items()})
    with KlarnaEmulator(spec, start_timeout=60) as emulator:
        SECRETS.extend(secrets_of(emulator.config()))
        for new, late in growth:
            emulator.grow(new_payouts=new, late_payouts=late)
        if args.grow:
            emulator.grow(new_payouts=args.grow, late_payouts=GROW_LATE_PAYOUTS)
            growth.append([args.grow, GROW_LATE_PAYOUTS])
        spec_fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
        spec_fields["currencies"] = list(spec_fields["currencies"])
        save_emulator_state(db_path, spec_fields, growth)
        dataset = emulator.dataset
        expected = {"payouts": dataset.payout_count, "transactions": dataset.transaction_count()}
        log(
            f"Source: the bundled Klarna emulator at {emulator.url} (no Klarna account needed): seed {spec.seed}, "
            f"{expected['payouts']:,} payouts x {spec.transactions_per_payout} transactions in {', '.join(spec.currencies)}"
        )
        if args.grow:
            log(f"        grown just now by {args.grow} new payouts and {GROW_LATE_PAYOUTS} late payout")
        log(f"Warehouse: {db_path} (emulator dataset kept in {emulator_state_path(db_path).name})")
        outcome = sync(emulator.config(), db_path, origin="the bundled emulator")
    print_outcome(outcome)
    dbt = build_models(db_path)
    report = print_report(db_path)
    log()
    problems = [
        f"{name}: {outcome.after[name]:,} rows, emulator serves {n:,}" for name, n in expected.items() if outcome.after[name] != n
    ]
    if problems:
        log("ERROR: the warehouse does not match the emulator's data: " + "; ".join(problems))
        return 1
    log(
        f"Check: the warehouse holds exactly the emulator's {expected['payouts']:,} payouts and "
        f"{expected['transactions']:,} transactions."
    )
    query_hint(db_path)
    return 0 if report.reconciles and dbt.ok else 1


def query_hint(db_path: Path) -> None:
    def short(path: str) -> str:
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative

    log(
        f"Query it: {short(sys.executable)} -c "
        f"\"import duckdb; duckdb.connect('{short(str(db_path))}').sql('FROM {demo_report.DBT_SCHEMA}.klarna__payout_reconciliation LIMIT 5').show()\""
    )


def run_with_config(args: argparse.Namespace, db_path: Path) -> int:
    config = read_config(args.config)
    SECRETS.extend(secrets_of(config))
    log(f"Source: {klarna_endpoint(config)}, API user {config.get('username')} (config {args.config})")
    log(f"Warehouse: {db_path}")
    outcome = sync(config, db_path, origin=klarna_endpoint(config), check_first=True)
    print_outcome(outcome)
    dbt = build_models(db_path)
    print_report(db_path)
    log()
    query_hint(db_path)
    return 0 if dbt.ok else 1


def print_report(db_path: Path) -> demo_report.Report:
    con = duckdb.connect(str(db_path))
    try:
        report = demo_report.build_report(con)
    finally:
        con.close()
    log()
    log(demo_report.format_report(report))
    html_path = demo_report.html_path_for(db_path)
    demo_report.write_html(report, html_path)
    log()
    log(f"Charts: {html_path}")
    return report


def _terminate(signum, _frame):
    # Turn SIGTERM into an exception so the emulator subprocess is stopped on the way out.
    raise SystemExit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    warnings.filterwarnings("ignore", category=FutureWarning)  # Google client libraries PyAirbyte imports
    if not sys.stderr.isatty():
        os.environ.setdefault("NO_LIVE_PROGRESS", "1")
    db_path = Path(args.db).expanduser().resolve()
    try:
        if args.config:
            return run_with_config(args, db_path)
        return run_with_emulator(args, db_path)
    except DemoError as error:
        print(f"run_demo: {redact(str(error), SECRETS)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("run_demo: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # PyAirbyte / connector failures: one readable message, no secrets
        print(f"run_demo: the sync failed: {redact(f'{type(error).__name__}: {error}', SECRETS)}", file=sys.stderr)
        print("run_demo: the connector's log is under /tmp/airbyte/logs (see the paths printed above).", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
