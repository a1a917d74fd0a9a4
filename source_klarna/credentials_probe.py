"""One request before a `read`, so that rejected credentials end the sync with one error.

Without it a sync with a wrong password fails every payout window and every summary month on its
own: dozens of identical config errors (49 for a two-year start date). The probe asks Klarna for one
payout of the last day, at the host the manifest's requester would use, and only a 401/403 answer
counts: anything else (a timeout, a 5xx, a refused connection) is left to the sync, which retries and
reports it. The message is the manifest's own `rejected_credentials` sentence, so `check` and `read`
say the same thing.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

import requests

from airbyte_cdk.sources.declarative.interpolation.interpolated_string import InterpolatedString

PROBE_PATH = "/settlements/v1/payouts"
PROBE_TIMEOUT_SECONDS = (10, 30)  # connect, read: a slow Klarna is the sync's business, not the probe's


def _evaluate(template: str, config: Mapping[str, Any], **context: Any) -> str:
    return str(InterpolatedString.create(template, parameters={}).eval(config, **context))


def rejected_credentials_message(manifest: Mapping[str, Any], config: Mapping[str, Any]) -> Optional[str]:
    """The manifest's sentence for rejected credentials if Klarna rejects these, else None."""
    definitions = manifest["definitions"]
    url = _evaluate(definitions["requester"]["url_base"], config).rstrip("/") + PROBE_PATH
    now = datetime.now(timezone.utc).replace(microsecond=0)
    params = {"size": 1, "start_date": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "end_date": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    try:
        response = requests.get(
            url, params=params, auth=(str(config.get("username", "")), str(config.get("password", ""))), timeout=PROBE_TIMEOUT_SECONDS
        )
    except requests.RequestException:
        return None
    if response.status_code not in (401, 403):
        return None
    parts = urlsplit(response.url or url)
    request_url = urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))
    template = definitions["response_filters"]["rejected_credentials"]["error_message"]
    return " ".join(_evaluate(template, config, request_url=request_url).split())
