"""Klarna's date-time formats: query parameters in, ``YYYY-MM-DDTHH:MM:SSZ`` out (POSIX seconds inside).

The standard library is enough here: the data only ever adds whole days and seconds to POSIX
timestamps, and the query semantics are ISO 8601 with a few Klarna rules (below).
"""
from __future__ import annotations

import calendar
import datetime as _dt
import math
import re
import time

__all__ = ["DAY", "HOUR", "parse_datetime", "format_datetime"]

DAY = 86400
HOUR = 3600

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_datetime(value) -> float:
    """Klarna query-date semantics -> POSIX seconds (UTC).

    ``2024-01-23`` means ``2024-01-23T00:00:00Z``; ``Z`` and numeric offsets such
    as ``+00:00`` are accepted (converted to UTC); a value without an offset is
    taken as UTC. Raises ``ValueError`` for anything unparseable. Also accepts
    ``datetime``/``date`` objects and numbers (already POSIX seconds).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, _dt.datetime):
        d = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
        return d.timestamp()
    if isinstance(value, _dt.date):
        return float(calendar.timegm(value.timetuple()))
    if not isinstance(value, str):
        raise ValueError(f"not a date-time: {value!r}")
    s = value.strip()
    if not s or " " in s:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}")
    if _DATE_ONLY.match(s):
        d = _dt.datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=_dt.timezone.utc)
        return d.timestamp()
    if "T" not in s and "t" not in s:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}")
    if s[-1] in "zZ":
        s = s[:-1] + "+00:00"
    try:
        d = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.timestamp()


def format_datetime(ts: float) -> str:
    """POSIX seconds -> ``YYYY-MM-DDTHH:MM:SSZ`` (seconds truncated)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(ts)))
