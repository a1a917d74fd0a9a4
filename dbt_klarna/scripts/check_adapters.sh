#!/usr/bin/env bash
# Compile the dbt_klarna package for BigQuery, Snowflake and Postgres without a warehouse.
#
# Installs dbt-core 1.11 and the three adapters into a throwaway virtualenv (from PyPI; they are not
# in the project's constraints.txt), copies the package to a temporary directory (no target/ or
# logs/ in the repository), writes a profile with dummy credentials per adapter (postgres on
# 127.0.0.1 port 1; nothing is ever reached) and runs, for each adapter and for
# klarna__using_pending_transactions true and false:
#   dbt parse
#   dbt compile --no-introspect --no-populate-cache
# `--no-populate-cache` keeps dbt compile from listing schemas (a connection); `--no-introspect`
# from running introspective queries. The compiled SQL is then checked for the adapter's idioms.
#
# Usage: dbt_klarna/scripts/check_adapters.sh [postgres] [snowflake] [bigquery]
#   KLARNA_DBT_CHECK_VENV=<dir>  reuse (or create) this virtualenv instead of a temporary one
#   KLARNA_DBT_CHECK_KEEP=1      keep the temporary directory (compiled SQL under target-<adapter>-*)
set -euo pipefail

PKG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d)"
if [[ "${KLARNA_DBT_CHECK_KEEP:-0}" == "1" ]]; then
  echo "work directory: $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi
ADAPTERS=("$@")
[[ ${#ADAPTERS[@]} -gt 0 ]] || ADAPTERS=(postgres snowflake bigquery)

VENV="${KLARNA_DBT_CHECK_VENV:-$WORK/venv}"
if [[ ! -x "$VENV/bin/dbt" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "dbt-core>=1.11,<1.12" "${ADAPTERS[@]/#/dbt-}"
fi
DBT="$VENV/bin/dbt"
export DBT_SEND_ANONYMOUS_USAGE_STATS=false DBT_VERSION_CHECK=false

mkdir -p "$WORK/pkg"
(cd "$PKG_DIR" && tar --exclude=./target --exclude=./logs --exclude=./dbt_packages -cf - .) | tar -xf - -C "$WORK/pkg"

profile() {  # dummy credentials: parse and compile (without introspection) need no connection
  case "$1" in
    postgres) cat <<'YML'
klarna:
  target: ci
  outputs:
    ci: {type: postgres, host: 127.0.0.1, port: 1, user: dummy, password: dummy, dbname: dummy,
         schema: dbt_klarna, threads: 1, connect_timeout: 2, retries: 0}
YML
    ;;
    snowflake) cat <<'YML'
klarna:
  target: ci
  outputs:
    ci: {type: snowflake, account: dummy, user: dummy, password: dummy, database: DUMMY, warehouse: DUMMY,
         schema: dbt_klarna, threads: 1, connect_retries: 0, connect_timeout: 2}
YML
    ;;
    bigquery) cat <<'YML'
klarna:
  target: ci
  outputs:
    ci: {type: bigquery, method: oauth-secrets, token: dummy, project: dummy-project, dataset: dbt_klarna,
         threads: 1, job_retries: 0}
YML
    ;;
    *) echo "unknown adapter: $1" >&2; return 1 ;;
  esac
}

# What the compiled SQL of each adapter must (and must not) contain.
expect() {  # adapter, compiled models dir
  local a="$1" dir="$2" ok=0
  must() { grep -rqiF -- "$1" "$dir" || { echo "  [$a] expected in compiled SQL: $1" >&2; ok=1; }; }
  mustnot() { ! grep -rqiF -- "$1" "$dir" || { echo "  [$a] not expected in compiled SQL: $1" >&2; ok=1; }; }
  case "$a" in
    postgres)  must "cast(totals as jsonb) ->> 'settlement_amount'"; must "string_agg("; must "date_trunc('month'" ;;
    snowflake) must "get_path(totals, 'settlement_amount')"; must "try_cast("; must "within group (order by payment_reference)"
               must "date_trunc('month'" ;;
    bigquery)  must "json_value(totals, '\$.settlement_amount')"; must "safe_cast("; must "string_agg("; must "timestamp_trunc("
               mustnot "jsonb" ;;
  esac
  mustnot "json_extract_string"  # DuckDB's
  return $ok
}

status=0
for adapter in "${ADAPTERS[@]}"; do
  mkdir -p "$WORK/profiles/$adapter"
  profile "$adapter" > "$WORK/profiles/$adapter/profiles.yml"
  for pending in true false; do
    target="$WORK/target-$adapter-pending-$pending"
    args=(--profiles-dir "$WORK/profiles/$adapter" --target-path "$target" --log-path "$WORK/logs-$adapter"
          --vars "{klarna__using_pending_transactions: $pending}")
    echo "== $adapter (klarna__using_pending_transactions: $pending)"
    if (cd "$WORK/pkg" && "$DBT" --quiet parse "${args[@]}" \
        && "$DBT" --quiet compile --no-introspect --no-populate-cache "${args[@]}" > /dev/null) \
       && expect "$adapter" "$target/compiled/klarna/models"; then
      echo "   ok: $(find "$target/compiled" -name '*.sql' | wc -l | tr -d ' ') compiled files"
    else
      echo "   FAILED (dbt log: $WORK/logs-$adapter/dbt.log, kept with KLARNA_DBT_CHECK_KEEP=1)"; status=1
    fi
  done
done
exit $status
