"""Helpers for the warehouse tests: a PyAirbyte sync into a DuckDB file or a PostgreSQL server, SQL
on either, and dbt_klarna built on either with dbt-duckdb or dbt-postgres.

* ``run_pyairbyte_sync(config, warehouse, form=..., manifest_path=..., ...)`` runs
  ``pyairbyte_sync.py`` (beside this file) in a process of its own with a timeout and returns its
  JSON result (records per stream, seconds, ...); a failed sync raises ``SyncFailed`` with the
  result's error and the tail of its stderr (``check=False`` returns the failed result instead).
* ``query(warehouse, sql, params=())`` -> list of tuples.
* ``run_dbt(adapter, connection, project_dir, target_schema, vars, command=("build",), timeout=...)``
  writes a throwaway profile named ``klarna`` (dbt_klarna's ``profile:``) and returns a
  ``DbtOutcome``: exit code, seconds, counts by status and the nodes that did not succeed, read from
  target/run_results.json by demo/run_demo.py's dbt_outcome.

A *warehouse* is a DuckDB file (a ``Path`` or ``str``) or a PostgreSQL server: a
``postgres_server.PostgresParams`` or a mapping with host, port, user, password, database. No
password is ever written to a file or shown in a message of these helpers: it reaches the sync by a
private argument file (mode 0600, removed after), dbt by an environment variable dbt scrubs from its
logs (DBT_ENV_SECRET_*), and every returned text is redacted.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote, quote_plus

from connector_runner import OFFLINE_DNS, run_in_own_session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "demo"))
from run_demo import DbtOutcome, dbt_executable, dbt_outcome, redact  # noqa: E402  (demo/run_demo.py: its dbt runner's parts)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYNC_SCRIPT = HERE / "pyairbyte_sync.py"
DBT_PROJECT = ROOT / "dbt_klarna"
DBT_PROFILE = "klarna"  # dbt_klarna/dbt_project.yml's `profile:`
SYNC_TIMEOUT_S = 600
DBT_TIMEOUT_S = 900
QUERY_TIMEOUT_S = 120
PASSWORD_ENV = "DBT_ENV_SECRET_KLARNA_PG_PASSWORD"  # dbt scrubs DBT_ENV_SECRET_* values from its output

Warehouse = Union[str, Path, Mapping[str, Any], Any]


class SyncFailed(AssertionError):
    """A PyAirbyte sync that did not succeed: the result's error and the process's stderr tail."""

    def __init__(self, message: str, result: Optional[Dict[str, Any]] = None, stderr: str = "") -> None:
        super().__init__(message)
        self.result, self.stderr = result, stderr


# ------------------------------------------------------------------------------------ warehouses


def is_duckdb(warehouse: Warehouse) -> bool:
    return isinstance(warehouse, (str, Path))


def postgres_params(warehouse: Warehouse) -> Dict[str, Any]:
    """host, port, user, password, database of a PostgresParams or a mapping (user or username)."""
    if hasattr(warehouse, "as_dict"):
        warehouse = warehouse.as_dict()
    if not isinstance(warehouse, Mapping):
        raise TypeError(f"a warehouse is a DuckDB file path or PostgreSQL parameters, not {type(warehouse).__name__}")
    return {
        "host": str(warehouse["host"]),
        "port": int(warehouse["port"]),
        "user": str(warehouse.get("user") or warehouse["username"]),
        "password": str(warehouse["password"]),
        "database": str(warehouse.get("database") or warehouse["dbname"]),
    }


def _secrets(*values: Any) -> List[str]:
    """Every form a password could show up in: as is, JSON-escaped, URL-quoted, base64."""
    forms = set()
    for value in (str(v) for v in values if v):
        forms |= {value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value),
                  base64.b64encode(value.encode()).decode()}
    return sorted((f for f in forms if f), key=len, reverse=True)


def query(warehouse: Warehouse, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
    """Rows of `sql` on the warehouse (read only for DuckDB; `%s` placeholders on PostgreSQL, `?` on
    DuckDB). A statement that does not return rows gives []."""
    if is_duckdb(warehouse):
        import duckdb

        connection = duckdb.connect(str(warehouse), read_only=True)
        try:
            cursor = connection.execute(sql, list(params))
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        finally:
            connection.close()
    import psycopg2

    pg = postgres_params(warehouse)
    connection = psycopg2.connect(
        host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname=pg["database"],
        connect_timeout=10, options=f"-c statement_timeout={QUERY_TIMEOUT_S * 1000}",
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql, list(params) or None)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    finally:
        connection.close()


def table_counts(warehouse: Warehouse, schema: str, tables: Sequence[str]) -> Dict[str, Optional[int]]:
    """Rows of each table of `schema` (None for a table that is not there)."""
    placeholder = "?" if is_duckdb(warehouse) else "%s"
    present_sql = f"SELECT table_name FROM information_schema.tables WHERE table_schema = {placeholder}"
    present = {row[0] for row in query(warehouse, present_sql, [schema])}
    return {
        table: (query(warehouse, f'SELECT count(*) FROM "{schema}"."{table}"')[0][0] if table in present else None)
        for table in tables
    }


# ------------------------------------------------------------------------------------------ sync


def run_pyairbyte_sync(
    config: Mapping[str, Any],
    warehouse: Warehouse,
    *,
    form: str = "package",
    manifest_path: Optional[Union[str, Path]] = None,
    schema: Optional[str] = None,
    write_strategy: str = "auto",
    force_full_refresh: bool = False,
    streams: Optional[Sequence[str]] = None,
    executable: Optional[Union[str, Path]] = None,
    timeout: float = SYNC_TIMEOUT_S,
    check: bool = True,
) -> Dict[str, Any]:
    """One PyAirbyte sync (pyairbyte_sync.py) of `config` into the warehouse's `schema` (DuckDB:
    "main" by default; PostgreSQL: "airbyte_raw", PyAirbyte's default). `form` "package" runs the
    venv's source-klarna (or `executable`), i.e. the installed wheel with the manifest.yaml and
    components.py of the last `make install`; "manifest-only" runs `manifest_path` with the
    components.py beside it in PyAirbyte's own declarative executor, on the venv's airbyte-cdk (tests:
    connector_runner.connector_file("manifest.yaml"), the session's snapshot).
    Returns the script's result, plus `stderr_tail` (redacted) and `secret_in_output` (whether a
    form of the connector's or the cache's password showed in its stdout or stderr before this
    redacted them: a test asserts it is False). Raises SyncFailed when the sync failed and `check` (or when the
    script gave no result at all, or ran out of `timeout`: AssertionError with its output)."""
    if is_duckdb(warehouse):
        cache: Dict[str, Any] = {"type": "duckdb", "db_path": str(warehouse), "schema_name": schema or "main"}
    else:
        cache = {"type": "postgres", **postgres_params(warehouse), "schema_name": schema or "airbyte_raw"}
    hidden = _secrets(config.get("password"), f"{config.get('username', '')}:{config.get('password', '')}", cache.get("password"))
    if form == "manifest-only" and manifest_path is None:
        raise ValueError("form manifest-only needs manifest_path (connector_runner.connector_file('manifest.yaml'))")
    args = {
        "config": dict(config),
        "form": form,
        "manifest_path": str(manifest_path) if manifest_path else None,
        "executable": str(executable) if executable else None,
        "cache": cache,
        "write_strategy": write_strategy,
        "force_full_refresh": force_full_refresh,
        "streams": list(streams) if streams else None,
    }
    with tempfile.TemporaryDirectory(prefix="pyairbyte-sync-") as work:
        args_file = Path(work) / "args.json"
        descriptor = os.open(args_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(args, handle)
        environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        environment.update(PYTHONPATH=OFFLINE_DNS, PYTHONUNBUFFERED="1", AIRBYTE_OFFLINE_MODE="1", DO_NOT_TRACK="1")
        code, stdout, stderr = run_in_own_session(
            [sys.executable, str(SYNC_SCRIPT), f"@{args_file}"], timeout, cwd=work, env=environment
        )
    # Whether any form of a password reached the output, before it is redacted here.
    leaked = any(secret in stdout or secret in stderr for secret in hidden)
    stdout, stderr = redact(stdout, hidden), redact(stderr, hidden)
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise SyncFailed(f"pyairbyte_sync.py gave no result (exit {code}); stdout:\n{stdout[-2000:]}\nstderr:\n{stderr[-3000:]}",
                         None, stderr) from None
    result["stderr_tail"] = stderr[-3000:]
    result["secret_in_output"] = leaked
    if check and not result.get("ok"):
        raise SyncFailed(f"the {form} sync into {cache['type']} failed: {result.get('error')}\nstderr:\n{stderr[-3000:]}", result, stderr)
    return result


# ------------------------------------------------------------------------------------------- dbt


def dbt_profile(adapter: str, connection: Warehouse, target_schema: str, threads: int = 1) -> str:
    """A profile `klarna` with one target `test` on the warehouse (the PostgreSQL password read from
    the environment variable PASSWORD_ENV, never written)."""
    head = f"{DBT_PROFILE}:\n  target: test\n  outputs:\n    test:\n"
    if adapter == "duckdb":
        if not is_duckdb(connection):
            raise TypeError("the duckdb adapter needs a DuckDB file path")
        body = {"type": "duckdb", "path": str(connection), "schema": target_schema, "threads": threads}
    elif adapter == "postgres":
        pg = postgres_params(connection)
        body = {
            "type": "postgres", "host": pg["host"], "port": pg["port"], "user": pg["user"],
            "password": f"{{{{ env_var('{PASSWORD_ENV}') }}}}", "dbname": pg["database"], "schema": target_schema,
            "threads": threads, "connect_timeout": 10, "retries": 0,
        }
    else:
        raise ValueError(f"adapter must be duckdb or postgres, not {adapter!r}")
    return head + "".join(f"      {key}: {json.dumps(value)}\n" for key, value in body.items())


def run_dbt(
    adapter: str,
    connection: Warehouse,
    project_dir: Union[str, Path] = DBT_PROJECT,
    target_schema: str = "dbt_klarna",
    vars: Optional[Mapping[str, Any]] = None,  # noqa: A002 - dbt's own word
    command: Sequence[str] = ("build",),
    timeout: float = DBT_TIMEOUT_S,
    threads: int = 1,
) -> DbtOutcome:
    """`dbt <command>` on `project_dir` with dbt-duckdb or dbt-postgres into `target_schema`; the
    profile, target/ and logs/ in a temporary directory removed afterwards. Failing models or tests do
    not raise: the outcome lists them. A run longer than `timeout` is killed (AssertionError)."""
    hidden = [] if adapter == "duckdb" else _secrets(postgres_params(connection)["password"])
    work = Path(tempfile.mkdtemp(prefix="klarna-dbt-"))
    started = time.monotonic()
    try:
        (work / "profiles.yml").write_text(dbt_profile(adapter, connection, target_schema, threads))
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DBT_")},
            "DBT_PROFILES_DIR": str(work),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DBT_VERSION_CHECK": "false",
            "DBT_USE_COLORS": "false",
            "DBT_PARTIAL_PARSE": "false",
            "DO_NOT_TRACK": "1",
        }
        if adapter == "postgres":
            environment[PASSWORD_ENV] = postgres_params(connection)["password"]
        args = [
            str(dbt_executable()), "--no-use-colors", "--log-format", "text", *command,
            "--project-dir", str(project_dir), "--profiles-dir", str(work), "--profile", DBT_PROFILE, "--target", "test",
            "--target-path", str(work / "target"), "--log-path", str(work / "logs"),
            "--vars", json.dumps(dict(vars or {})),
        ]
        code, stdout, stderr = run_in_own_session(args, timeout, cwd=str(work), env=environment)
        output = redact(stdout + stderr, hidden)
        return dbt_outcome(code, time.monotonic() - started, output, work / "target" / "run_results.json",
                           redact=lambda message: redact(message, hidden))
    finally:
        shutil.rmtree(work, ignore_errors=True)
