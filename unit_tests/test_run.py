"""The console script's process-wide settings (source_klarna.run)."""

from __future__ import annotations

import json
import sys

import pytest

from source_klarna.run import GIL_SWITCH_INTERVAL_SECONDS, run


def test_the_console_script_lengthens_the_gil_switch_interval_before_reading(capsys):
    # Why 50 ms and not CPython's 5 ms: see run.py and README's Performance section (bench figures).
    default = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        run(["spec"])
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_INTERVAL_SECONDS)
    finally:
        sys.setswitchinterval(default)
    assert GIL_SWITCH_INTERVAL_SECONDS > 0.005
    spec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert spec["type"] == "SPEC"
