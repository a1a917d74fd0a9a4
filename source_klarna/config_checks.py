"""Config mistakes a user can fix, each reported as one sentence that says what to change.

The manifest's spec rejects the same inputs by pattern; this runs first so that `check`, `discover`
and `read` answer in words instead of a JSON-schema message.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Optional
from urllib.parse import urlparse

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

REGIONS = ("eu", "na", "oc")
PLATFORMS = ("klarna", "kustom")
# Kustom's API keys say which environment they are for: kco_live_api_... or kco_test_api_... .
KUSTOM_KEY_PREFIX, KUSTOM_LIVE_KEY, KUSTOM_TEST_KEY = "kco_", "kco_live_", "kco_test_"
LOCAL_HOSTS = ("localhost", "127.0.0.1")


class KlarnaConfigError(AirbyteTracedException):
    def __init__(self, message: str) -> None:
        super().__init__(message=message, internal_message=message, failure_type=FailureType.config_error)


def config_problem(config: Mapping[str, Any], now: Optional[dt.datetime] = None) -> Optional[str]:
    """The first problem with `config`, as a sentence, or None."""
    now = now or dt.datetime.now(dt.timezone.utc)
    for name in ("username", "password"):
        if not isinstance(config.get(name), str) or not config.get(name):
            return f"The {name} is missing: copy the API {name} from the Klarna Merchant Portal (Settings > Klarna API keys)."
    region = config.get("region") or "eu"
    if region not in REGIONS:
        return f"The region {region!r} is unknown: use one of eu, na or oc (the region of your Klarna merchant account)."
    for name in ("playground", "include_personal_data"):
        if name in config and not isinstance(config[name], bool):
            return f"{name} must be true or false."
    problem = _platform_problem(config, region)
    if problem:
        return problem
    start_date = config.get("start_date")
    if start_date:
        parsed = None
        for layout in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
            try:
                parsed = dt.datetime.strptime(str(start_date), layout).replace(tzinfo=dt.timezone.utc)
                break
            except ValueError:
                continue
        if parsed is None:
            return f"The start_date {start_date!r} is not a UTC date-time: write it as YYYY-MM-DDTHH:MM:SSZ, for example 2024-01-01T00:00:00Z."
        if parsed > now:
            return f"The start_date {start_date} lies in the future: set it to today or earlier, or leave it empty to sync the whole history."
    for name, low, high in (
        ("lookback_window_days", 0, 90),
        ("concurrency", 1, 30),
        ("max_requests_per_second", 1, 200),
        ("rate_limit_reserve_percent", 0, 90),
    ):
        value = config.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            return f"{name} must be a whole number from {low} to {high}; it is {value!r}."
    override = config.get("base_url_override")
    if override:
        parsed_url = urlparse(str(override))
        if parsed_url.scheme == "http" and parsed_url.hostname not in LOCAL_HOSTS:
            return (
                f"base_url_override {override!r} uses plain http, which would send the Klarna password unencrypted: "
                "use an https:// URL (plain http is only accepted for localhost and 127.0.0.1)."
            )
        if parsed_url.scheme not in ("http", "https") or not parsed_url.hostname:
            return f"base_url_override {override!r} is not a URL: write it as https://host[:port], or leave it empty to use Klarna's host for the region."
    return None


def _platform_problem(config: Mapping[str, Any], region: str) -> Optional[str]:
    """Platform mistakes: an unknown platform, a Klarna region with Kustom, and a Kustom API key used
    with the wrong platform or environment (only the key's public prefix is ever quoted)."""
    platform = config.get("platform") or "klarna"
    if platform not in PLATFORMS:
        return f"The platform {platform!r} is unknown: use klarna, or kustom if your API credentials come from the Kustom Portal."
    password = str(config.get("password") or "")
    if platform == "klarna":
        if password.startswith(KUSTOM_KEY_PREFIX):
            return "The password is a Kustom API key (it starts with kco_): set platform to kustom."
        return None
    if region != "eu":
        return (
            f"region {region!r} applies to Klarna only: Kustom serves every merchant from api.kustom.co, "
            "so remove region (or set it to eu) when platform is kustom."
        )
    playground = bool(config.get("playground"))
    if password.startswith(KUSTOM_TEST_KEY) and not playground:
        return "The password is a Kustom test API key (kco_test_...): switch playground on, or use a live key (kco_live_...) for production."
    if password.startswith(KUSTOM_LIVE_KEY) and playground:
        return "The password is a Kustom live API key (kco_live_...): switch playground off, or use a test key (kco_test_...) for the playground."
    return None


def validate_config(config: Mapping[str, Any]) -> None:
    problem = config_problem(config)
    if problem:
        raise KlarnaConfigError(problem)
