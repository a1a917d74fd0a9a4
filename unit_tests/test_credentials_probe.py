"""The credentials probe before a read: one request, and only a 401/403 stops the sync."""

from __future__ import annotations

import base64
import re

import pytest
import requests

from source_klarna.credentials_probe import PROBE_PATH, rejected_credentials_message
from source_klarna.source import SourceKlarna

PASSWORD = "Probe-pw_3xQ!-secret"
CONFIG = {"username": "K123456_abc", "password": PASSWORD, "region": "na", "playground": True, "start_date": "2024-01-01T00:00:00Z"}
URL = "https://api-na.playground.klarna.com" + PROBE_PATH


@pytest.fixture(scope="module")
def manifest():
    return SourceKlarna(config=CONFIG).resolved_manifest


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_give_the_manifests_sentence_for_that_region_and_environment(requests_mock, manifest, status):
    requests_mock.get(URL, status_code=status, json={"error_code": "UNAUTHORIZED"})

    message = rejected_credentials_message(manifest, CONFIG)

    assert message.startswith("Klarna rejected the API credentials for the na playground environment (HTTP 401/403 from " + URL + ")")
    assert '"playground" is on for playground credentials' in message
    assert PASSWORD not in message and "?" not in message


def test_the_probe_is_one_basic_auth_request_for_one_payout_of_the_last_day(requests_mock, manifest):
    requests_mock.get(URL, status_code=200, json={"payouts": [], "pagination": {"count": 0, "total": 0}})

    assert rejected_credentials_message(manifest, CONFIG) is None

    (request,) = requests_mock.request_history
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"K123456_abc:{PASSWORD}".encode()).decode()
    query = request.qs
    assert query["size"] == ["1"]
    for name in ("start_date", "end_date"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dt\d\d:\d\d:\d\dz", query[name][0]), query  # requests-mock lower-cases


@pytest.mark.parametrize(
    "answer",
    [dict(status_code=500), dict(status_code=429), dict(status_code=404), dict(exc=requests.exceptions.ConnectTimeout), dict(exc=requests.exceptions.ConnectionError)],
)
def test_anything_but_a_rejection_is_left_to_the_sync(requests_mock, manifest, answer):
    requests_mock.get(URL, **answer)

    assert rejected_credentials_message(manifest, CONFIG) is None


def test_the_probe_goes_where_the_sync_goes(requests_mock, manifest):
    override = dict(CONFIG, base_url_override="http://127.0.0.1:9/base")
    requests_mock.get("http://127.0.0.1:9/base" + PROBE_PATH, status_code=401)

    assert "HTTP 401/403 from http://127.0.0.1:9/base/settlements/v1/payouts" in rejected_credentials_message(manifest, override)
