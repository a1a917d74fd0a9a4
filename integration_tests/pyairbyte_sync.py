"""One PyAirbyte sync of source-klarna into a cache, run as a subprocess of the tests:

    python pyairbyte_sync.py '<json>'        # or  @args.json  (a file; keeps passwords off the process list)

prints exactly one JSON line on stdout (everything else PyAirbyte or the connector prints goes to
stderr) and exits 0 when the sync succeeded, 1 when it failed, 2 for bad arguments.

Arguments (a JSON object):

* ``config``: the connector's config.
* ``form``: ``"package"`` runs the installed wheel's ``source-klarna`` executable
  (``ab.get_source(..., local_executable=...)``; ``executable`` overrides which one, default the one
  beside this interpreter); ``"manifest-only"`` runs ``manifest_path`` (required) in PyAirbyte's own
  declarative executor, with the ``components.py`` beside that manifest
  (``ab.get_source(..., source_manifest=Path(manifest_path))``; AIRBYTE_ENABLE_UNSAFE_CODE=true).
* ``cache``: ``{"type": "duckdb", "db_path": ..., "schema_name": "main"}`` or
  ``{"type": "postgres", "host", "port", "user" (or "username"), "password", "database", "schema_name"}``
  (``airbyte.caches.PostgresCache``: PyAirbyte 0.71.3 does not export it as ``ab.PostgresCache``).
* ``write_strategy``: ``auto`` (default), ``merge``, ``append`` or ``replace``;
  ``force_full_refresh``: bool (default false); ``streams``: list of stream names, or null for all.
* ``cache_dir``: PyAirbyte's scratch directory (default: a temporary one, removed afterwards).

Result: ``{"ok", "form", "cache", "schema", "write_strategy", "force_full_refresh", "streams"
(records read per stream), "records", "cached_rows" (rows in each synced stream's table afterwards,
on success), "seconds", "error"}``. No password appears in it: the config's and the cache's are
replaced by ``****`` in every message.
"""

from __future__ import annotations

import os

# Read by PyAirbyte at import: no registry look-up, no telemetry, no live progress display.
os.environ["AIRBYTE_OFFLINE_MODE"] = "1"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("NO_LIVE_PROGRESS", "1")

import base64
import json
import shutil
import sys
import tempfile
import time
import traceback
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping

FORMS = ("package", "manifest-only")
WRITE_STRATEGIES = ("auto", "merge", "append", "replace")
SOURCE_NAME = "source-klarna"


class BadArguments(ValueError):
    pass


def load_arguments(argv: List[str]) -> Dict[str, Any]:
    if len(argv) != 1:
        raise BadArguments("usage: pyairbyte_sync.py '<json>' | @file.json")
    text = argv[0]
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        args = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadArguments(f"arguments are not JSON: {error}") from None
    if not isinstance(args, dict):
        raise BadArguments("arguments must be a JSON object")
    if args.get("form") not in FORMS:
        raise BadArguments(f"form must be one of {FORMS}, not {args.get('form')!r}")
    if args["form"] == "manifest-only" and not args.get("manifest_path"):
        raise BadArguments("form manifest-only needs manifest_path (components.py beside it)")
    if str(args.get("write_strategy", "auto")) not in WRITE_STRATEGIES:
        raise BadArguments(f"write_strategy must be one of {WRITE_STRATEGIES}")
    if not isinstance(args.get("config"), dict):
        raise BadArguments("config must be a JSON object")
    cache = args.get("cache")
    if not isinstance(cache, dict) or cache.get("type") not in ("duckdb", "postgres"):
        raise BadArguments('cache must be {"type": "duckdb", ...} or {"type": "postgres", ...}')
    streams = args.get("streams")
    if streams is not None and (not isinstance(streams, list) or not all(isinstance(s, str) for s in streams)):
        raise BadArguments("streams must be a list of stream names, or null")
    return args


def secrets_of(args: Mapping[str, Any]) -> List[str]:
    """Strings no output may hold: the connector's password (and its Basic token), the cache's password."""
    found: List[str] = []
    config, cache = args.get("config") or {}, args.get("cache") or {}
    password = config.get("password") if isinstance(config, dict) else None
    if isinstance(password, str) and password:
        found += [password, base64.b64encode(f"{config.get('username', '')}:{password}".encode()).decode()]
    cache_password = cache.get("password") if isinstance(cache, dict) else None
    if isinstance(cache_password, str) and cache_password:
        found.append(cache_password)
    # URL-encoded forms (an SQLAlchemy URL, a query string) too.
    found += [urllib.parse.quote(s, safe="") for s in list(found)] + [urllib.parse.quote_plus(s) for s in list(found)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def redact(text: str, hidden: List[str]) -> str:
    for secret in hidden:
        text = text.replace(secret, "****")
    return text


def make_cache(spec: Mapping[str, Any], cache_dir: Path):
    import airbyte as ab

    schema = str(spec.get("schema_name") or ("main" if spec["type"] == "duckdb" else "airbyte_raw"))
    if spec["type"] == "duckdb":
        return ab.DuckDBCache(db_path=str(spec["db_path"]), schema_name=schema, cache_dir=cache_dir), schema
    from airbyte.caches import PostgresCache  # not exported at the top level of airbyte 0.71.3

    return (
        PostgresCache(
            host=str(spec["host"]),
            port=int(spec["port"]),
            username=str(spec.get("username") or spec["user"]),
            password=str(spec["password"]),
            database=str(spec["database"]),
            schema_name=schema,
            cache_dir=cache_dir,
        ),
        schema,
    )


def get_source(args: Mapping[str, Any]):
    import airbyte as ab

    if args["form"] == "package":
        executable = Path(args.get("executable") or Path(sys.executable).with_name(SOURCE_NAME))
        if not executable.exists():
            raise FileNotFoundError(f"{executable} not found: `make install` installs the connector into .venv")
        return ab.get_source(SOURCE_NAME, config=args["config"], local_executable=str(executable)), str(executable)
    manifest = Path(args["manifest_path"]).resolve()
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} not found")
    if not manifest.with_name("components.py").exists():
        raise FileNotFoundError(f"no components.py beside {manifest}: PyAirbyte loads it from there")
    return ab.get_source(SOURCE_NAME, config=args["config"], source_manifest=manifest), str(manifest)


def cached_rows(cache, schema: str, streams: List[str]) -> Dict[str, int]:
    """Rows in each stream's table of the cache, after the sync (its own query, not PyAirbyte's count)."""
    from sqlalchemy import text

    counts: Dict[str, int] = {}
    engine = cache.get_sql_engine()
    with engine.connect() as connection:
        for stream in streams:
            table = cache.processor.normalizer.normalize(stream)
            counts[stream] = int(connection.execute(text(f'SELECT count(*) FROM "{schema}"."{table}"')).scalar())
    return counts


def track_progress(trackers: List[Any]) -> None:
    """Keeps every ProgressTracker PyAirbyte creates: a failed read returns no ReadResult, and its
    tracker still knows how many records of each stream arrived before the failure."""
    from airbyte import progress

    original = progress.ProgressTracker.__init__

    def init(self, *a, **k):
        original(self, *a, **k)
        trackers.append(self)

    progress.ProgressTracker.__init__ = init


def sync(args: Dict[str, Any]) -> Dict[str, Any]:
    if args["form"] == "manifest-only":
        os.environ["AIRBYTE_ENABLE_UNSAFE_CODE"] = "true"  # PyAirbyte's executor loads components.py
    warnings.filterwarnings("ignore")
    write_strategy = str(args.get("write_strategy") or "auto")
    force_full_refresh = bool(args.get("force_full_refresh", False))
    result: Dict[str, Any] = {
        "ok": False,
        "form": args["form"],
        "cache": args["cache"]["type"],
        "schema": None,
        "write_strategy": write_strategy,
        "force_full_refresh": force_full_refresh,
        "connector": None,
        "streams": {},
        "records": 0,
        "cached_rows": {},
        "seconds": None,
        "error": None,
    }
    own_cache_dir = not args.get("cache_dir")
    cache_dir = Path(args.get("cache_dir") or tempfile.mkdtemp(prefix="pyairbyte-sync-"))
    started = time.monotonic()
    cache = read = None
    trackers: List[Any] = []
    try:
        import airbyte as ab  # noqa: F401  (imported here: its import time counts in the sync's seconds)

        track_progress(trackers)

        source, result["connector"] = get_source(args)
        if args.get("streams"):
            source.select_streams(list(args["streams"]))
        else:
            source.select_all_streams()
        cache, result["schema"] = make_cache(args["cache"], cache_dir)
        read = source.read(cache=cache, write_strategy=write_strategy, force_full_refresh=force_full_refresh)
        result["ok"] = True
    except BaseException as error:  # noqa: BLE001 - every failure becomes the result's error text
        if isinstance(error, KeyboardInterrupt):
            raise
        result["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc(file=sys.stderr)
    finally:
        result["seconds"] = round(time.monotonic() - started, 3)
        tracker = getattr(read, "_progress_tracker", None) or (trackers[-1] if trackers else None)
        counts = dict(getattr(tracker, "stream_read_counts", {}) or {})
        result["streams"] = {name: int(n) for name, n in sorted(counts.items())}
        result["records"] = int(getattr(read, "processed_records", 0) or sum(counts.values()))
        if read is not None:
            try:
                result["cached_rows"] = cached_rows(cache, result["schema"], sorted(read))
            except Exception as error:  # noqa: BLE001
                result["cached_rows"] = {"error": f"{type(error).__name__}: {error}"}
        if cache is not None:
            try:
                cache.close()
            except Exception:  # noqa: BLE001
                pass
        if own_cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return result


def main(argv: List[str]) -> int:
    # Only the result goes to the real stdout: fd 1 points at stderr while PyAirbyte runs.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    hidden: List[str] = []
    try:
        args = load_arguments(argv)
        hidden = secrets_of(args)
        result = sync(args)
        code = 0 if result["ok"] else 1
    except BadArguments as error:
        result, code = {"ok": False, "error": f"bad arguments: {error}"}, 2
    except Exception as error:  # noqa: BLE001 - unreadable args file, ...
        result, code = {"ok": False, "error": f"{type(error).__name__}: {error}"}, 2
    line = redact(json.dumps(result, default=str), hidden)
    with os.fdopen(result_fd, "w") as out:
        out.write(line + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
