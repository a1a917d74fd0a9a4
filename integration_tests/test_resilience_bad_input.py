"""Bad input: wrong credentials, wrong region or environment, bad start dates, unsafe base URLs,
errors about size/offset from the API and answers of an unexpected shape. Each ends in a clear config
or system error whose message says what to do, never a bare traceback, never a hang; and the password
appears in no byte of the output, with `--debug` too.

Klarna's unexpected answers are made by an intercepting proxy between the connector and the emulator
(it rewrites a request's query or a response's JSON). The scenarios the selected tests need run side
by side in one module fixture (most of a run is the interpreter starting or a backoff sleeping); each
test then checks one scenario's outcome.

Every scenario runs in both forms of the connector (connector_runner.FORMS: the package's
`source-klarna` and the stock `source-declarative-manifest` on the two files) with the same
assertions, and test_both_forms_fail_alike checks that they fail with the same errors: what a user can
fix is found while the streams are built (config_problem, the credentials probe, UsableState), so each
is one config error with the same sentence; a state file that is not a list of state messages is the
stock runtime's "Error starting the sync" in both.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import urlencode

import pytest

from conftest import EMULATOR_PASSWORD
from connector_runner import FORMS, configured_catalog
from klarna_emulator import DatasetSpec, KlarnaEmulator
from streaming_runner import (
    PAYOUTS_PATH,
    SUMMARY_PATH,
    TRANSACTIONS_PATH,
    InterceptingProxy,
    assert_clean_run,
    assert_no_secret,
    assert_payouts_exact,
    assert_transactions_exact,
    connector_components,
    fast_backoff_manifest,
    first_of_month,
    result_of,
    scenario_results,
    selected_scenarios,
    stream_connector,
)

# Two pages of transactions per payout, so `offset` and `total` matter.
SPEC = DatasetSpec(seed=51, payouts=3, transactions_per_payout=510, first_payout_date=first_of_month(1, day=3))
START_DATE = first_of_month(2)
SETTLEMENTS = ["payouts", "transactions"]


def _run(form: str, verb: str, config: Mapping[str, Any], streams=SETTLEMENTS, debug: bool = False, timeout: float = 90, **kwargs):
    catalog = configured_catalog(streams, "full_refresh") if verb == "read" else None
    return stream_connector(verb, config, catalog, extra_args=["--debug"] if debug else (), timeout=timeout, form=form, **kwargs)


def in_both_forms(names):
    """`scenario` parameters "<form>|<name>" of each name in each form (ids "<name>-<form>")."""
    return [pytest.param(f"{form}|{name}", id=f"{name}-{form}") for name in names for form in FORMS]


def form_of(scenario: str) -> str:
    return scenario.split("|", 1)[0]


def name_of(scenario: str) -> str:
    return scenario.split("|", 1)[1]


# --------------------------------------------------------------------------- config mistakes

# name: (verb, config overrides, failure_type expected, words of the cause, words of the fix)
# (test_cli.py already covers check with a wrong password, check with 21/11/2026 and discover with
# plain http; these are the other verbs and mistakes.)
CONFIG_CASES: Dict[str, tuple] = {
    "wrong-password-read": ("read", dict(password="Wrong-pw_9zQ!-also-secret"), "config_error", ["rejected the API credentials", "eu production", PAYOUTS_PATH], ["Check that the username and password"]),
    "wrong-password-check": ("check", dict(password="Wrong-pw_3cV!-also-secret"), None, ["rejected the API credentials", "eu production", PAYOUTS_PATH], ["Check that the username and password"]),
    "credentials-of-another-region": ("check", dict(region="na", password="Na-region-pw_4kX!"), None, ["na production"], ["API key pair from the Merchant Portal of that region"]),
    "playground-credentials-against-production": ("read", dict(playground=False, password="Playground-pw_2mR!"), "config_error", ["production environment"], ['"playground" is on for playground credentials']),
    # (region "us", what Airbyte's Klarna connector 0.2.x saved, is migrated to na: test_sync_exact.py;
    # any other is refused by the CDK's validation against the spec's enum, before config_problem)
    "unknown-region": ("check", dict(region="xx"), None, ["Config validation error", "'xx' is not one of"], ["['eu', 'na', 'oc']"]),
    "impossible-start-date-read": ("read", dict(start_date="2026-13-45"), "config_error", ["2026-13-45"], ["write it as YYYY-MM-DDTHH:MM:SSZ"]),
    "start-date-without-zone-discover": ("discover", dict(start_date="2026-01-01T00:00:00"), "config_error", ["2026-01-01T00:00:00"], ["write it as YYYY-MM-DDTHH:MM:SSZ"]),
    "future-start-date-read": ("read", dict(start_date="2099-01-01"), "config_error", ["lies in the future"], ["set it to today or earlier"]),
    "plain-http-remote-read": ("read", dict(base_url_override="http://10.1.2.3:8080/klarna"), "config_error", ["plain http", "unencrypted"], ["use an https:// URL"]),
    "not-a-url-check": ("check", dict(base_url_override="ftp://klarna.example.com"), None, ["is not a URL"], ["write it as https://host[:port]"]),
    # What the credentials probe finds: a host that does not resolve (.invalid: offline_dns), a 404.
    "unknown-host-read": ("read", dict(base_url_override="https://klarna-proxy.example.invalid"), "config_error", ["klarna-proxy.example.invalid", "does not resolve"], ["check base_url_override"]),
    "unknown-host-check": ("check", dict(base_url_override="https://klarna-proxy.example.invalid"), None, ["klarna-proxy.example.invalid", "does not resolve"], ["check base_url_override"]),
}


def config_mistake(emulator, form, name):
    verb, overrides = CONFIG_CASES[name][:2]

    def scenario():
        config = emulator.config(**{"start_date": START_DATE, **overrides})
        return SimpleNamespace(config=config, run=_run(form, verb, config))

    return scenario


# --------------------------------------------------------------------------- states it cannot use

# name: (the state FILE's content, the error's failure_type, words of its message)
STATE_CASES: Dict[str, tuple] = {
    # A cursor that is not a date-time: UsableState, while the streams are built, one config error.
    "cursor-not-a-date": (
        [{"type": "STREAM", "stream": {"stream_descriptor": {"name": "payouts"}, "stream_state": {"payout_date": "last tuesday"}}}],
        "config_error",
        ["The saved state of stream", 'payout_date is "last tuesday", not a date-time', "Reset the stream's state"],
    ),
    # Not a list of state messages: the stock runtime's own trace (its failure_type unset), in both forms.
    "not-a-list-of-messages": (
        {"payouts": {"payout_date": "2026-09-01T00:00:00Z"}},
        None,
        ["Error starting the sync. This could be due to an invalid configuration or catalog.", "Schema validation failed"],
    ),
}


def unusable_state(emulator, form, name):
    def scenario():
        config = emulator.config(start_date=START_DATE)
        run = stream_connector("read", config, configured_catalog(SETTLEMENTS), STATE_CASES[name][0], timeout=90, form=form)
        return SimpleNamespace(config=config, run=run)

    return scenario


# --------------------------------------------------------------------------- what Klarna answers


def _rewrite_query(match: Callable[[str, Dict[str, str]], bool], **changes: str):
    def on_request(path, query):
        if match(path, query):
            return f"{path}?{urlencode({**query, **changes})}"
        return None

    return on_request


def _reshape(match: Callable[[str, Dict[str, str]], bool], change: Callable[[Dict[str, Any]], Any], times: Optional[int] = None):
    """Rewrites the JSON body of matching 200 answers (all of them, or the first `times`)."""
    done = []

    def on_response(path, query, status, body):
        if status != 200 or not match(path, query) or (times is not None and len(done) >= times):
            return None
        done.append(path)
        return status, json.dumps(change(json.loads(body))).encode()

    return on_response


def _without(key: str, inside: Optional[str] = None):
    def change(body):
        (body[inside] if inside else body).pop(key, None)
        return body

    return change


def _with_unknown_fields(body):
    body["klarna_new_top_level"] = {"x": 1}
    body["pagination"]["cursor_hint"] = "abc"
    for row in body.get("transactions") or body.get("payouts") or []:
        row["field_klarna_added_in_2027"] = "new"
    return body


def _is(path_wanted: str):
    return lambda path, query: path == path_wanted


def _second_page(path, query):
    return path == TRANSACTIONS_PATH and int(query.get("offset") or 0) > 0


# name: () -> (on_request, on_response, manifest factory, streams)
SHAPE_CASES: Dict[str, Callable[[], tuple]] = {
    "page-size-refused": lambda: (_rewrite_query(_is(TRANSACTIONS_PATH), size="501"), None, None, SETTLEMENTS),
    "offset-refused": lambda: (_rewrite_query(_second_page, offset="-500"), None, None, SETTLEMENTS),
    "no-pagination-block-once": lambda: (None, _reshape(_is(TRANSACTIONS_PATH), _without("pagination"), times=1), None, SETTLEMENTS),
    "no-pagination-block-always": lambda: (None, _reshape(_is(TRANSACTIONS_PATH), _without("pagination")), fast_backoff_manifest, SETTLEMENTS),
    "null-list-always": lambda: (None, _reshape(_is(PAYOUTS_PATH), lambda b: {**b, "payouts": None}), fast_backoff_manifest, SETTLEMENTS),
    "summary-not-a-list-always": lambda: (None, _reshape(_is(SUMMARY_PATH), lambda b: {"summaries": b}), fast_backoff_manifest, ["payout_summaries"]),
    "unknown-fields": lambda: (None, _reshape(lambda p, q: p in (PAYOUTS_PATH, TRANSACTIONS_PATH), _with_unknown_fields), None, SETTLEMENTS),
    "no-total": lambda: (None, _reshape(_is(TRANSACTIONS_PATH), _without("total", inside="pagination")), None, SETTLEMENTS),
}


def _html_page(path, query):
    return 200, {"Content-Type": "text/html; charset=utf-8"}, b"<!doctype html><html><body><form action=/login>Sign in</form></body></html>"


# name: (verb, on_request) of a host that answers every request, the probe's included, with the same page
PROBED_CASES: Dict[str, tuple] = {
    "html-page-read": ("read", _html_page),
    "html-page-check": ("check", _html_page),
}


def probed_answer(emulator, form, name):
    verb, on_request = PROBED_CASES[name]

    def scenario():
        with InterceptingProxy(emulator.url, on_request=on_request) as proxy:
            config = emulator.config(start_date=START_DATE, base_url_override=proxy.url)
            run = _run(form, verb, config)
        assert not proxy.hook_errors, proxy.hook_errors
        return SimpleNamespace(config=config, run=run, requests=list(proxy.seen))

    return scenario


def unexpected_answer(emulator, form, name):
    def scenario():
        on_request, on_response, manifest, streams = SHAPE_CASES[name]()
        with InterceptingProxy(emulator.url, on_request=on_request, on_response=on_response) as proxy:
            config = emulator.config(start_date=START_DATE, base_url_override=proxy.url)
            run = _run(form, "read", config, streams, manifest=manifest() if manifest else None)
        assert not proxy.hook_errors, proxy.hook_errors
        return SimpleNamespace(config=config, run=run)

    return scenario


# --------------------------------------------------------------------------- secrets, with --debug

DEBUG_SPEC = DatasetSpec(seed=53, payouts=3, transactions_per_payout=30, first_payout_date=first_of_month(1, day=3))
# Every code path that could print the password, with debug logging on: a failed check, discover, a
# read through retries of every fault kind, and a read that fails after exhausting its retries.
# name: (verb, config overrides, emulator knobs, manifest factory)
DEBUG_CASES: Dict[str, tuple] = {
    "check-wrong-password": ("check", dict(password=EMULATOR_PASSWORD + "-wrong"), {}, None),
    "discover": ("discover", {}, {}, None),
    "read-through-faults": (
        "read",
        {},
        dict(fail_requests={2: "error_503", 4: "connection_reset", 6: "truncated_body", 8: "invalid_json", 10: "rate_limit"}),
        None,
    ),
    "read-retries-exhausted": ("read", {}, dict(error_5xx=1.0), fast_backoff_manifest),
}


def with_debug_logging(form, name):
    verb, overrides, knobs, manifest = DEBUG_CASES[name]

    def scenario():
        with KlarnaEmulator(spec=DEBUG_SPEC, password=EMULATOR_PASSWORD, **knobs) as emulator:
            config = emulator.config(**{"start_date": START_DATE, **overrides})
            run = _run(form, verb, config, ["payouts", "transactions", "payout_summaries"], debug=True, manifest=manifest() if manifest else None)
            # The account's secret, and the (wrong) one this run tried.
            return SimpleNamespace(account={**config, "password": EMULATOR_PASSWORD}, tried=config, run=run)

    return scenario


@pytest.fixture(scope="module")
def results(request, manifest_only_build):
    with KlarnaEmulator(spec=SPEC, password=EMULATOR_PASSWORD) as emulator:
        scenarios = {}
        for form in FORMS:
            scenarios.update({f"{form}|config-{name}": config_mistake(emulator, form, name) for name in CONFIG_CASES})
            scenarios.update({f"{form}|state-{name}": unusable_state(emulator, form, name) for name in STATE_CASES})
            scenarios.update({f"{form}|probed-{name}": probed_answer(emulator, form, name) for name in PROBED_CASES})
            scenarios.update({f"{form}|answer-{name}": unexpected_answer(emulator, form, name) for name in SHAPE_CASES})
            scenarios.update({f"{form}|debug-{name}": with_debug_logging(form, name) for name in DEBUG_CASES})
        # The cases test_both_forms_fail_alike compares, in each form.
        compared = [f"{form}|{case}" for case in selected_scenarios(request, "case") for form in FORMS]
        outcomes = scenario_results(request, scenarios, workers=8, also=compared)
        yield {name: SimpleNamespace(**vars(o), emulator=emulator) if isinstance(o, SimpleNamespace) else o for name, o in outcomes.items()}


# --------------------------------------------------------------------------- the tests


def with_forms(cases):
    """`(scenario, *more)` parameters of each case in each form (ids "<name>-<form>")."""
    return [pytest.param(f"{form}|{name}", *more, id=f"{name}-{form}") for name, *more in cases for form in FORMS]


def _stripped(message: str) -> str:
    """A message without what differs between two runs of the same input: the proxy's port, and how
    many seconds an endpoint that stopped answering was watched (a matter of the machine's speed)."""
    message = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", message)
    return re.sub(r"answered nothing else for \d+ s\b", "answered nothing else for <n> s", message)


def _what_a_user_sees(run) -> list:
    """(failure_type, message) of every error trace, or the failed check's message."""
    if run.of_type("CONNECTION_STATUS"):
        status = run.connection_status()
        return [("check", status["status"], _stripped(status.get("message") or ""))]
    seen = []
    for error in run.errors():
        message = _stripped(error["message"])
        closing = re.match(r"(During the sync, the following streams did not sync successfully:)", message)
        if closing:
            # The CDK's closing trace quotes the first exception of each failed stream, whichever of
            # its partitions (read side by side) failed first: the streams it names are what is stable.
            message = closing.group(1) + " " + ", ".join(sorted(set(re.findall(r"(?:^|\s)(\w+): \w*Exception\(", message[closing.end():]))))
        seen.append((error.get("failure_type"), message))
    return seen


@pytest.mark.parametrize("scenario", in_both_forms([f"config-{name}" for name in CONFIG_CASES]))
def test_a_config_mistake_gets_one_clear_error_that_says_what_to_change(results, scenario):
    verb, _, failure_type, cause, fix = CONFIG_CASES[name_of(scenario).removeprefix("config-")]
    outcome = result_of(results, scenario)
    run = outcome.run

    assert_clean_run(run, outcome.config)
    if verb == "check":
        assert run.exit_code == 0
        status = run.connection_status()
        assert status["status"] == "FAILED"
        message = status["message"]
    else:
        assert run.exit_code == 1, f"exit {run.exit_code}"
        errors = run.errors()
        # One error, not one per payout window and summary month: what a user can fix stops a read
        # while the streams are built (PacedBasicHttpAuthenticator: config_problem and the probe).
        assert len(errors) == 1, [error["message"][:120] for error in errors]
        assert {error["failure_type"] for error in errors} == {failure_type}, errors
        message = errors[0]["message"]
        assert not run.of_type("RECORD")
    for words in cause + fix:
        assert words in message, f"{words!r} not in {message!r}"


@pytest.mark.parametrize("scenario", in_both_forms([f"probed-{name}" for name in PROBED_CASES]))
def test_a_host_that_answers_html_is_one_config_error_found_by_one_request(results, scenario):
    outcome = result_of(results, scenario)
    run = outcome.run

    assert_clean_run(run, outcome.config)
    if PROBED_CASES[name_of(scenario).removeprefix("probed-")][0] == "check":
        assert run.exit_code == 0
        status = run.connection_status()
        assert status["status"] == "FAILED"
        message = status["message"]
    else:
        assert run.exit_code == 1
        errors = run.errors()
        assert [error["failure_type"] for error in errors] == ["config_error"], errors
        message = errors[0]["message"]
        assert not run.of_type("RECORD")
    for words in (f"{PAYOUTS_PATH} answered an HTML page (Content-Type text/html", "not a page of payouts", "Check base_url_override"):
        assert words in message, f"{words!r} not in {message!r}"
    # The probe's one request (GET payouts?size=1), and no stream's.
    assert outcome.requests == [(PAYOUTS_PATH, {"size": "1"})]


@pytest.mark.parametrize("scenario", in_both_forms([f"state-{name}" for name in STATE_CASES]))
def test_a_state_it_cannot_use_fails_before_any_request_with_one_error(results, scenario):
    _, failure_type, words = STATE_CASES[name_of(scenario).removeprefix("state-")]
    outcome = result_of(results, scenario)
    run = outcome.run

    assert run.exit_code == 1
    assert_no_secret(run, outcome.config)
    errors = run.errors()
    assert len(errors) == 1, [error["message"][:120] for error in errors]
    assert errors[0].get("failure_type") == failure_type, errors
    for word in words:
        assert word in errors[0]["message"], f"{word!r} not in {errors[0]['message']!r}"
    assert not run.of_type("RECORD")


BOTH_FORMS_ALIKE = (
    [f"config-{name}" for name in CONFIG_CASES]
    + [f"state-{name}" for name in STATE_CASES]
    + [f"probed-{name}" for name in PROBED_CASES]
    + ["answer-no-pagination-block-always", "answer-no-pagination-block-once", "debug-check-wrong-password"]
)


@pytest.mark.parametrize("case", BOTH_FORMS_ALIKE)
def test_both_forms_fail_alike(results, case):
    """The package and the stock runtime answer each bad input with the same errors: as many, of the
    same failure_type, with the same sentence (the proxy's port aside)."""
    package, manifest_only = (result_of(results, f"{form}|{case}").run for form in FORMS)

    assert package.exit_code == manifest_only.exit_code
    # (sorted: partitions that fail side by side report in either order)
    assert sorted(_what_a_user_sees(package), key=repr) == sorted(_what_a_user_sees(manifest_only), key=repr)


def _failed_with(run, failure_type: Optional[str], *words: str) -> str:
    assert run.exit_code == 1, f"exit {run.exit_code}"
    stream_errors = [error for error in run.errors() if error.get("stream_descriptor")]
    assert stream_errors, run.errors()
    error = stream_errors[0]
    if failure_type:
        assert error["failure_type"] == failure_type, error
    for word in words:
        assert word in error["message"], f"{word!r} not in {error['message']!r}"
    return error["message"]


@pytest.mark.parametrize(
    "scenario, reason",
    with_forms(
        [
            ("answer-page-size-refused", "size must be an integer between 1 and 500, got 501"),
            ("answer-offset-refused", "offset must be a non-negative integer, got -500"),
        ]
    ),
)
def test_size_or_offset_refused_by_klarna_fails_naming_the_endpoint_klarnas_reason_and_the_correlation_id(results, scenario, reason):
    outcome = result_of(results, scenario)

    assert_clean_run(outcome.run, outcome.config)
    message = _failed_with(outcome.run, None, TRANSACTIONS_PATH, "HTTP 400", reason, "correlation_id")
    assert "correlation_id none" not in message, message


@pytest.mark.parametrize("scenario", in_both_forms(["answer-page-size-refused", "answer-offset-refused"]))
def test_a_400_about_size_or_offset_is_a_system_error_that_asks_to_report_it(results, scenario):
    message = _failed_with(result_of(results, scenario).run, "system_error")

    assert "report" in message.lower()
    assert "start_date" not in message


@pytest.mark.parametrize("scenario", in_both_forms(["answer-no-pagination-block-once"]))
def test_a_page_without_pagination_block_once_is_retried_and_the_sync_is_exact(results, scenario):
    outcome = result_of(results, scenario)

    assert_clean_run(outcome.run, outcome.config)
    assert outcome.run.exit_code == 0 and not outcome.run.errors()
    assert_payouts_exact(outcome.emulator, outcome.run.records("payouts"))
    assert_transactions_exact(outcome.emulator, outcome.run.records("transactions"))


@pytest.mark.parametrize(
    "scenario, path, what",
    with_forms(
        [
            ("answer-no-pagination-block-always", TRANSACTIONS_PATH, "not a page of transactions"),
            ("answer-null-list-always", PAYOUTS_PATH, "not a page of payouts"),
            ("answer-summary-not-a-list-always", SUMMARY_PATH, "not a list of payout summaries"),
        ]
    ),
)
def test_an_answer_of_the_wrong_shape_that_persists_fails_loudly_naming_the_endpoint(results, scenario, path, what):
    outcome = result_of(results, scenario)

    assert_clean_run(outcome.run, outcome.config)
    message = _failed_with(outcome.run, "system_error", path, what)
    assert "report it" in message
    if path != TRANSACTIONS_PATH:  # (other payouts' transactions may have been read before)
        assert not outcome.run.of_type("RECORD"), "records from a window that never answered properly"
    # The stock runtime's closing trace names the stream that did not sync (and is the last error).
    assert "did not sync successfully" in outcome.run.errors()[-1]["message"]


@pytest.mark.parametrize("scenario", in_both_forms(["answer-unknown-fields"]))
def test_fields_klarna_adds_later_pass_through_and_change_no_key(results, scenario):
    outcome = result_of(results, scenario)
    run = outcome.run

    assert_clean_run(run, outcome.config)
    assert run.exit_code == 0 and not run.errors()
    payouts, transactions = run.records("payouts"), run.records("transactions")
    assert all(r["field_klarna_added_in_2027"] == "new" for r in payouts + transactions)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "field_klarna_added_in_2027"} for r in rows]  # noqa: E731
    assert_payouts_exact(outcome.emulator, strip(payouts))
    assert_transactions_exact(outcome.emulator, strip(transactions))
    # The key hashes Klarna's documented fields only: the new field leaves it as it was.
    fingerprint = connector_components().transaction_fingerprint
    assert all(r["transaction_key"].split(":")[1] == fingerprint(s) for r, s in zip(transactions, strip(transactions)))


@pytest.mark.parametrize("scenario", in_both_forms(["answer-no-total"]))
def test_pages_without_total_are_still_read_to_the_end(results, scenario):
    outcome = result_of(results, scenario)

    assert_clean_run(outcome.run, outcome.config)
    assert outcome.run.exit_code == 0 and not outcome.run.errors()
    assert_transactions_exact(outcome.emulator, outcome.run.records("transactions"))


def test_pages_without_offset_are_read_to_the_end_not_forever(make_emulator, form):
    emulator = make_emulator(DatasetSpec(seed=52, payouts=1, transactions_per_payout=1100, first_payout_date=first_of_month(1, day=3)))
    strip_offset = _reshape(_is(TRANSACTIONS_PATH), _without("offset", inside="pagination"))

    def looping(message, so_far):  # three times the rows there are: the same page again and again
        return message.get("type") == "RECORD" and sum(1 for m in so_far if m.get("type") == "RECORD") > 3 * 1100

    with InterceptingProxy(emulator.url, on_response=strip_offset) as proxy:
        config = emulator.config(start_date=START_DATE, base_url_override=proxy.url)
        run = stream_connector("read", config, configured_catalog(["transactions"], "full_refresh"), kill_when=looping, timeout=60, form=form)

    assert not run.killed, "the connector kept re-reading the same page"
    assert run.exit_code == 0
    assert_transactions_exact(emulator, run.records("transactions"))


@pytest.mark.parametrize("scenario", in_both_forms([f"debug-{name}" for name in DEBUG_CASES]))
def test_debug_output_never_contains_the_password(results, scenario):
    outcome = result_of(results, scenario)
    everything = outcome.run.everything

    assert outcome.run.of_type("DEBUG") or [m for m in outcome.run.of_type("LOG") if m["log"]["level"] == "DEBUG"], "debug logging was off"
    # Every request a stream makes is logged with --debug (the credentials probe's, made while the
    # streams are built, is not the CDK's HTTP client's: a failed check logs none).
    if outcome.run.of_type("RECORD"):
        assert "Making outbound API request" in everything
    for password in {outcome.account["password"], outcome.tried["password"]}:
        for form in (password, json.dumps(password)[1:-1]):
            assert form not in everything, "the password appears in the output"
    assert "Traceback" not in outcome.run.stderr


@pytest.mark.parametrize("scenario", in_both_forms([f"debug-{n}" for n in DEBUG_CASES]))
def test_debug_output_never_contains_the_basic_auth_token(results, scenario):
    outcome = result_of(results, scenario)

    assert_no_secret(outcome.run, outcome.account)
    assert_no_secret(outcome.run, outcome.tried)
