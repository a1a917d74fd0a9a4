"""One error per cause: a read's error traces that say the same thing are reported once, with a count.

The CDK reports a failure once per partition: a 404 on the payout summaries endpoint over three years
is 36 identical errors, one per month; rejected credentials one per payout window. The entrypoint
passes every other message through as it comes and holds the error traces of streams until the read
ends (they change no state), then prints one per (stream, failure type, message), the message saying
how many partitions it ended. Klarna's correlation ids differ between the repeats and are left out of
the comparison; the first repeat's message is kept whole. The CDK's closing error, which repeats every partition's
exception, is then left out (source_klarna.run).
"""

import re
from typing import Callable, Dict, Tuple

import orjson

_CORRELATION_ID = re.compile(r"correlation_id [0-9A-Za-z-]+")
_TRACE_MARK = '"type":"TRACE"'
# CDK 7.39.1 replaces the error handler's sentence for a 429 that outlasts every retry by this generic
# one and keeps ours only in the internal message (HttpClient._send_with_retry). Delete this once the
# CDK reports the error handler's message there.
_CDK_RATE_LIMIT_MESSAGE, _CDK_RATE_LIMIT_INTERNAL = "API rate limit exceeded.", "Rate limit retry budget exhausted. Last exception: "


def _cause(message: Dict) -> Tuple[str, str, str]:
    error = message["trace"]["error"]
    stream = (error.get("stream_descriptor") or {}).get("name") or ""
    return stream, str(error.get("failure_type")), _CORRELATION_ID.sub("correlation_id", str(error.get("message")))


class OneErrorPerCause:
    """Feeds serialised Airbyte messages through, holding stream error traces back until `flush`."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._held: Dict[Tuple[str, str, str], Tuple[Dict, int]] = {}
        self.reported = 0  # stream errors emitted, one per cause

    def feed(self, line: str) -> None:
        if _TRACE_MARK in line:
            message = orjson.loads(line)
            error = message.get("trace", {}).get("error")
            if message.get("trace", {}).get("type") == "ERROR" and error and error.get("stream_descriptor"):
                internal = str(error.get("internal_message") or "")
                if error.get("message") == _CDK_RATE_LIMIT_MESSAGE and internal.startswith(_CDK_RATE_LIMIT_INTERNAL):
                    error["message"] = internal[len(_CDK_RATE_LIMIT_INTERNAL) :]
                cause = _cause(message)
                first, count = self._held.get(cause, (message, 0))
                self._held[cause] = (first, count + 1)
                return
        self._emit(line)

    def flush(self) -> None:
        for first, count in self._held.values():
            if count > 1:
                error = first["trace"]["error"]
                error["message"] = f"{error['message']} (The same error ended {count} of this stream's partitions: date windows, months or payouts.)"
            self._emit(orjson.dumps(first).decode())
            self.reported += 1
        self._held.clear()

