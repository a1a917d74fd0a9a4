"""The authenticator's credentials probe: one request (GET <url_base>/settlements/v1/payouts?size=1)
before any stream reads, once per sync config; the sentence for an answer every request would get
(rejected credentials, a host that does not serve the Settlements API, an HTML page, a name that does
not resolve), None for anything a retry may cure. And what the authenticator does with every request:
Basic auth, the token registered as a secret."""

from __future__ import annotations

import base64
import socket
from typing import Any, Dict

import pytest
import requests

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets, update_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from components import PROBES
from unit_tests.manifest_parts import order_requester, resolved_manifest
from unit_tests.mock_server import response_builder as rb

PASSWORD = "Probe-pw_3xQ!-secret"
CONFIG = {"username": "K123456_abc", "password": PASSWORD, "region": "na", "playground": True, "start_date": "2024-01-01T00:00:00Z"}
URL = "https://api-na.playground.klarna.com/settlements/v1/payouts"


def _config(**fields: Any) -> Dict[str, Any]:
    return {**CONFIG, **fields}  # a new object: a new sync, so a new probe


def _build(config: Dict[str, Any]) -> Any:
    """The manifest's authenticator for `config` (building it sends the probe)."""
    return order_requester(config).authenticator


def _problem(config: Dict[str, Any]) -> str:
    with pytest.raises(AirbyteTracedException) as raised:
        _build(config)
    assert raised.value.failure_type == FailureType.config_error
    return raised.value.message


def test_the_manifest_points_the_probe_at_the_url_base_and_the_filters_sentences():
    authenticator = resolved_manifest()["definitions"]["authenticator"]

    assert authenticator["probe_url_base"] == resolved_manifest()["definitions"]["url_base"]
    assert authenticator["rejected_message"] == resolved_manifest()["definitions"]["response_filters"]["rejected_credentials"]["error_message"]
    assert authenticator["not_found_message"] == resolved_manifest()["definitions"]["response_filters"]["not_found"]["error_message"]


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_give_the_manifests_sentence_once_per_config(requests_mock, status):
    requests_mock.get(URL, status_code=status, json=rb.error("UNAUTHORIZED", [f"echo {PASSWORD}"]))
    config = _config()

    first, second = _problem(config), _problem(config)

    assert first == second
    assert first.startswith(f"Klarna rejected the API credentials for the na playground environment (HTTP 401/403 from {URL})")
    assert '"playground" is on for playground credentials' in first
    assert PASSWORD not in first and "?" not in first
    assert requests_mock.call_count == 1  # memoised for the sync's config


def test_the_probe_is_one_basic_auth_request_for_one_payout(requests_mock):
    requests_mock.get(URL, json=rb.page("payouts", []))

    _build(_config())

    (request,) = requests_mock.request_history
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"K123456_abc:{PASSWORD}".encode()).decode()
    assert request.qs == {"size": ["1"]}


def test_a_fine_answer_is_no_problem_and_memoised(requests_mock):
    requests_mock.get(URL, json=rb.page("payouts", [rb.payout("A")]))
    config = _config()

    _build(config)
    _build(config)
    _build(_config())  # another sync's config probes again

    assert requests_mock.call_count == 2
    # No problem, and the merchant of the payout it read (the Disputes API's header).
    assert PROBES.of(config, lambda: "not asked again") == (None, rb.payout("A")["merchant_id"])


def test_a_404_says_the_host_does_not_serve_the_settlements_api(requests_mock):
    requests_mock.get(URL, status_code=404, json=rb.error("NOT_FOUND", correlation_id="corr-404"))

    message = _problem(_config())

    assert message == f"{URL} answered HTTP 404 (correlation_id corr-404): that host does not serve Klarna's Settlements API. Check platform, region and base_url_override."


def test_an_html_page_says_something_else_answers_instead_of_klarna(requests_mock):
    requests_mock.get(URL, text="<html>Please log in</html>", headers={"Content-Type": "text/html; charset=utf-8"})

    message = _problem(_config())

    assert message.startswith(f"{URL} answered an HTML page (Content-Type text/html), not a page of payouts, once: something between this machine and Klarna")
    assert "Check base_url_override" in message


def test_a_host_that_does_not_resolve_is_named(requests_mock):
    override = "https://klarna-proxy.example.invalid"
    requests_mock.get(override + "/settlements/v1/payouts", exc=requests.exceptions.ConnectionError(socket.gaierror(socket.EAI_NONAME, "Name or service not known")))

    message = _problem(_config(base_url_override=override))

    assert message.startswith(f"The host klarna-proxy.example.invalid of {override}/settlements/v1/payouts does not resolve (Name or service not known)")
    assert f"check base_url_override ({override})" in message


@pytest.mark.parametrize(
    "answer",
    [
        dict(status_code=500, json=rb.error("INTERNAL")),
        dict(status_code=503, json=rb.error("DOWN")),
        dict(status_code=429, json=rb.error("RATE_LIMITED")),
        dict(text='{"payouts": [', headers={"Content-Type": "application/json"}),
        dict(exc=requests.exceptions.ConnectTimeout),
        dict(exc=requests.exceptions.ConnectionError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))),
    ],
)
def test_what_a_retry_may_cure_is_left_to_the_streams(requests_mock, answer):
    requests_mock.get(URL, **answer)

    _build(_config())  # no exception

    assert requests_mock.call_count == 1


def test_a_config_mistake_fails_before_any_request(requests_mock):
    message = _problem(_config(base_url_override="ftp://klarna.example.com"))

    assert "is not a URL" in message
    assert requests_mock.call_count == 0


def test_a_400_on_the_probe_is_the_bad_request_sentence_once(requests_mock):
    requests_mock.get(URL, status_code=400, json=rb.error("BAD_REQUEST", ["size: must be at least 1"], "corr-400"))

    message = _problem(_config())

    assert message.startswith(f"Klarna refused the request to {URL} (HTTP 400): size: must be at least 1 (correlation_id corr-400)")
    assert requests_mock.call_count == 1


def test_a_merchant_id_of_another_merchant_is_a_config_error_naming_both(requests_mock):
    requests_mock.get(URL, json=rb.page("payouts", [rb.payout("A")]))
    theirs = rb.payout("A")["merchant_id"]

    message = _problem(_config(merchant_id="K999999"))

    assert f"merchant_id K999999 is not the merchant of these API credentials: Klarna's payouts for them name {theirs}" in message
    _build(_config(merchant_id=theirs))  # the right one passes


def test_the_probe_goes_where_the_sync_goes(requests_mock):
    requests_mock.get("http://127.0.0.1:9/base/settlements/v1/payouts", status_code=401)

    assert "HTTP 401/403 from http://127.0.0.1:9/base/settlements/v1/payouts" in _problem(_config(base_url_override="http://127.0.0.1:9/base"))


def test_the_basic_token_is_registered_as_a_secret_when_first_used(requests_mock):
    requests_mock.get(URL, json=rb.page("payouts", []))
    token = base64.b64encode(f"K123456_abc:{PASSWORD}".encode()).decode()
    update_secrets([])  # as the entrypoint leaves it: the spec's secrets only

    _build(_config())

    assert filter_secrets(f"Authorization: Basic {token}") == "Authorization: Basic ****"


def test_a_request_the_authenticator_signs_carries_basic_auth_and_the_token_is_rendered_once(requests_mock):
    requests_mock.get(URL, json=rb.page("payouts", []))
    authenticator = _build(_config())

    signed = [authenticator(requests.Request("GET", URL).prepare()) for _ in range(3)]

    expected = "Basic " + base64.b64encode(f"K123456_abc:{PASSWORD}".encode()).decode()
    assert {request.headers["Authorization"] for request in signed} == {expected}
    assert authenticator.get_auth_header() == {"Authorization": expected} and authenticator.token == expected
