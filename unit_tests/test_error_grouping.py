"""The entrypoint prints a read's repeated errors once per cause, with how many partitions they ended."""

import orjson

from source_klarna.error_grouping import OneErrorPerCause


def trace(stream, message, failure_type="config_error"):
    error = {"message": message, "failure_type": failure_type, "internal_message": "internal"}
    if stream:
        error["stream_descriptor"] = {"name": stream}
    return orjson.dumps({"type": "TRACE", "trace": {"type": "ERROR", "emitted_at": 1.0, "error": error}}).decode()


def record(n):
    return orjson.dumps({"type": "RECORD", "record": {"stream": "payouts", "data": {"n": n}, "emitted_at": 1}}).decode()


def run(lines):
    printed = []
    grouping = OneErrorPerCause(printed.append)
    for line in lines:
        grouping.feed(line)
    grouping.flush()
    return printed, grouping


def test_the_same_error_of_many_partitions_is_printed_once_with_the_count_after_everything_else():
    lines = [record(1)] + [trace("payout_summaries", f"/summary answered HTTP 404 (correlation_id c-{n}): check the region.") for n in range(36)] + [record(2)]

    printed, grouping = run(lines)

    assert printed[:2] == [record(1), record(2)]
    (error,) = [orjson.loads(line)["trace"]["error"] for line in printed[2:]]
    assert error["message"] == "/summary answered HTTP 404 (correlation_id c-0): check the region. (The same error ended 36 of this stream's partitions: date windows, months or payouts.)"
    assert grouping.reported == 1


def test_different_causes_streams_and_failure_types_stay_apart():
    lines = [
        trace("payouts", "A"),
        trace("payouts", "A", "system_error"),
        trace("transactions", "A"),
        trace("payouts", "B"),
        trace("payouts", "A"),
    ]

    printed, grouping = run(lines)

    errors = [orjson.loads(line)["trace"]["error"] for line in printed]
    assert [(e["stream_descriptor"]["name"], e["failure_type"], e["message"].split(" (The same")[0]) for e in errors] == [
        ("payouts", "config_error", "A"),
        ("payouts", "system_error", "A"),
        ("transactions", "config_error", "A"),
        ("payouts", "config_error", "B"),
    ]
    assert "2 of this stream's partitions" in errors[0]["message"] and "(The same" not in errors[1]["message"]
    assert grouping.reported == 4


def test_errors_without_a_stream_and_other_traces_pass_through_at_once():
    config_error = trace(None, "The start_date lies in the future")
    status = orjson.dumps({"type": "TRACE", "trace": {"type": "STREAM_STATUS", "emitted_at": 1.0}}).decode()

    printed, grouping = run([config_error, status])

    assert printed == [config_error, status]
    assert grouping.reported == 0


def test_a_429_that_outlasts_every_retry_says_what_the_error_handler_said_not_the_cdks_generic_words():
    generic = orjson.loads(trace("payouts", "API rate limit exceeded."))
    generic["trace"]["error"]["internal_message"] = "Rate limit retry budget exhausted. Last exception: Klarna kept rate-limiting /payouts (HTTP 429)."

    printed, _ = run([orjson.dumps(generic).decode()])

    assert orjson.loads(printed[0])["trace"]["error"]["message"] == "Klarna kept rate-limiting /payouts (HTTP 429)."
