"""Where a connector read spends its CPU: py-spy over one `read`, summarised.

Used by `bench.py --profile` (and runnable alone on a py-spy raw file:
`python bench/profile_read.py profile.txt`). py-spy (`pip install py-spy`) samples the connector's
non-idle threads; the summary lists the functions with the most samples on top of the stack (self)
and on the stack at all (inclusive), and the share of samples per package.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> Optional[str]:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


def wrap(command: Sequence[str], output: Path, rate: int = 250, gil: bool = False) -> List[str]:
    """`command` run under `py-spy record`, writing collapsed stacks to `output`."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    extra = ["--gil"] if gil else []
    return [spy, "record", "--format", "raw", "--function", "--rate", str(rate), "--nonblocking", *extra,
            "--output", str(output), "--", *command]


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match.group('func')} ({path})"


def _package(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    path = match.group("file") if match else frame
    if "site-packages/" in path:
        rest = path.split("site-packages/", 1)[1]
        parts = rest.split("/")
        if parts[0] == "airbyte_cdk" and len(parts) > 2:
            return "/".join(parts[:3]) if parts[1] == "sources" and len(parts) > 3 else "/".join(parts[:2])
        return parts[0]
    if "source_klarna" in path:
        return "source_klarna"
    if "/lib/python3" in path:
        return "stdlib:" + path.rsplit("/lib/python3", 1)[1].split("/", 2)[-1].split("/")[0]
    return path


def summarise(raw: Path, top: int = 20) -> str:
    self_counts: Counter = Counter()
    inclusive: Counter = Counter()
    leaf_packages: Counter = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        self_counts[_short(frames[-1])] += count
        leaf_packages[_package(frames[-1])] += count
        for name in {_short(f) for f in frames}:
            inclusive[name] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "top functions by self samples:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in self_counts.most_common(top)]
    lines += ["", "top functions by inclusive samples (on the stack):"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in inclusive.most_common(top + 15)]
    lines += ["", "self samples by package:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in leaf_packages.most_common(15)]
    return "\n".join(lines)


# Where the time goes, by what the manifest / CDK does: a sample counts for a line when any frame of its
# stack contains one of the line's patterns (so lines overlap; indented lines are parts of the line above).
COMPONENTS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("process start-up (imports, manifest parsing)", ("_find_and_load", "ManifestDeclarativeSource.__init__",
                                                      "YamlDeclarativeSource.__init__")),
    ("main thread: queue consumer, serialise + print records", ("ConcurrentSource._consume_from_queue",)),
    ("  message serialisation (serpyco + orjson)", ("airbyte_message_to_string",)),
    ("worker: HTTP request/response (requests, urllib3)", ("HttpClient._send (",)),
    ("  error handler on every response (interpret_response)", ("interpret_response",)),
    ("  response filters' predicates (json.loads + Jinja per page)", ("_response_matches_predicate",)),
    ("  API budget (rate limiter)", ("acquire_call",)),
    ("worker: record extraction (decode + extractor)", ("extract_records",)),
    ("  dpath.get over the whole page (DpathExtractor)", ("DpathExtractor.extract_records",)),
    ("  JSON decode", ("_parse_orjson", "orjson.loads", "JSONDecoder.decode")),
    ("worker: record transformations", ("TransactionKeyAndPayout.transform", "AddFields.transform",
                                        "RemoveFields.transform", "FlattenFields.transform")),
    ("worker: schema normalisation (TypeTransformer)", ("TypeTransformer.transform",)),
    ("worker: record filter (client-side incremental)", ("RecordFilter", "ClientSideIncremental")),
    ("worker: per-partition cursor observe (per record)", ("ConcurrentPerPartitionCursor.observe",)),
    ("worker: any cursor observe (per record)", ("ConcurrentCursor.observe",)),
    ("  datetime parsing (strptime)", ("_strptime (",)),
    ("  slice hashing (json.dumps of the slice per record)", ("SliceHasher.hash",)),
    ("worker: Queue.put to the main thread", ("Queue.put",)),
    ("paginator (next page token / stop condition)", ("DefaultPaginator.next_page_token", "next_page_token")),
    ("orders: OrderFetcher threads, one GET per order", ("OrderFetcher._work",)),
    ("  requests.Session.get (requests, urllib3, http.client)", ("Session.get",)),
    ("  authenticator + rate-limit pacer", ("PacedBasicHttpAuthenticator", "RateLimitPacer")),
    ("  error handler on every answer (interpret_response)", ("ErrorHandler.interpret_response",)),
    ("orders: OrderItemsRetriever.read_records (the partition's records)", ("OrderItemsRetriever.read_records",)),
    ("  orjson.loads of each order", ("OrderFetcher.answers",)),
    ("  record selector (transformations, schema normalisation)", ("filter_and_transform",)),
    ("orders: the partition router (parents' transactions, grouping)", ("GroupingPartitionRouter", "SubstreamPartitionRouter")),
    ("Jinja evaluation anywhere", ("JinjaInterpolation.eval",)),
)


def components(raw: Path, rate: int = 250) -> List[Tuple[str, float, float]]:
    """[(component, seconds of samples, % of samples)] for COMPONENTS."""
    stacks = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            stacks.append((stack, int(count_text)))
    total = sum(count for _, count in stacks) or 1
    out = []
    for name, patterns in COMPONENTS:
        hits = sum(count for stack, count in stacks if any(pattern in stack for pattern in patterns))
        out.append((name, hits / rate, 100 * hits / total))
    return out


def components_table(profiles: Sequence[Tuple[str, Path]], rate: int = 250) -> str:
    """Side by side component shares of several profiles (e.g. source-klarna and the baseline)."""
    columns = [(label, {name: (sec, pct) for name, sec, pct in components(raw, rate)}) for label, raw in profiles]
    width = max(len(name) for name, _ in COMPONENTS)
    lines = ["where the samples go (seconds of samples / share; lines overlap, indented = part of the line above):",
             " " * (width + 2) + "".join(f"{label[:22]:>24}" for label, _ in columns)]
    for name, _ in COMPONENTS:
        cells = "".join(f"{values[name][0]:>12.2f} s {values[name][1]:>5.1f} %" for _, values in columns)
        lines.append(f"  {name:<{width}}{cells}")
    return "\n".join(lines)


def grep_inclusive(raw: Path, patterns: Sequence[str]) -> List[Tuple[str, float]]:
    """Share of samples whose stack contains each pattern (substring of a frame)."""
    totals = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for pattern in patterns:
            if pattern in stack:
                totals[pattern] += count
    return [(pattern, 100 * totals[pattern] / total if total else 0.0) for pattern in patterns]


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), top=int(sys.argv[2]) if len(sys.argv) > 2 else 20))
