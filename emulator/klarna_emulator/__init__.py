"""Klarna Settlements + Order Management + Disputes (v2) API emulator (stripe-mock style).

Public API: ``KlarnaEmulator`` (subprocess runner, see client.py), ``DatasetSpec``
and ``Dataset`` (deterministic data, see dataset.py, pending transactions and
unreconciled payouts included; growth events and disputes in events.py and
disputes.py; the sign convention of the totals is in transactions.py), ``FaultConfig`` (knobs: latency, Klarna's rate
limit, injected failures, see faults.py), ``parse_datetime``/``format_datetime``
(dates.py). Run ``python -m klarna_emulator --help``; emulator/README.md has it all.
"""
from .client import EmulatorStartError, KlarnaEmulator
from .dataset import Dataset, DatasetSpec
from .dates import format_datetime, parse_datetime
from .faults import FaultConfig

__all__ = ["KlarnaEmulator", "EmulatorStartError", "DatasetSpec", "Dataset", "FaultConfig",
           "parse_datetime", "format_datetime"]
