#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries are here for the warehouse tests
# (integration_tests/postgres_server.py): Debian's `postgresql` package, whose binaries live in
# /usr/lib/postgresql/<major>/bin and which creates the `postgres` system user the tests run the
# server as when they run as root. Idempotent and quiet: prints nothing when they are already there.
#
# As root, installs the package with apt-get (log in a temporary file, its tail shown on failure).
# Not root: says what to run and exits 1. SOURCE_KLARNA_PG_BIN, if set, names another directory
# holding initdb, pg_ctl and postgres, and nothing is installed.
set -euo pipefail

has_binaries() {  # has_binaries DIR: initdb, pg_ctl and postgres are executable there
  local name
  for name in initdb pg_ctl postgres; do [ -x "$1/$name" ] || return 1; done
}

if [ -n "${SOURCE_KLARNA_PG_BIN:-}" ]; then
  has_binaries "$SOURCE_KLARNA_PG_BIN" && exit 0
  echo "ensure_postgres: SOURCE_KLARNA_PG_BIN=$SOURCE_KLARNA_PG_BIN has no initdb, pg_ctl and postgres" >&2
  exit 1
fi

found() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do has_binaries "$dir" && return 0; done
  return 1
}

found && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "ensure_postgres: PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are missing; the warehouse tests need them." >&2
  echo "ensure_postgres: install Debian's postgresql package as root: sudo apt-get install -y postgresql" >&2
  exit 1
fi
if ! command -v apt-get > /dev/null; then
  echo "ensure_postgres: PostgreSQL's server binaries are missing and there is no apt-get: install PostgreSQL's server" \
    "and set SOURCE_KLARNA_PG_BIN to the directory of its initdb, pg_ctl and postgres" >&2
  exit 1
fi

log=$(mktemp "${TMPDIR:-/tmp}/ensure-postgres.XXXXXX")
trap 'rm -f "$log"' EXIT
# The package's post-install also creates Debian's default cluster `main` (port 5432; started only
# where an init system runs): the tests never use it, they start clusters of their own on free ports.
if ! { apt-get update -q > "$log" 2>&1 \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >> "$log" 2>&1; }; then
  tail -n 20 "$log" >&2
  echo "ensure_postgres: apt-get could not install postgresql (log above)" >&2
  exit 1
fi
found || { echo "ensure_postgres: postgresql installed but no /usr/lib/postgresql/*/bin/{initdb,pg_ctl,postgres}" >&2; exit 1; }
echo "ensure_postgres: installed Debian's postgresql ($(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' '))"
