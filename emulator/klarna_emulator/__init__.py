"""Klarna Settlements + Order Management API emulator (stripe-mock style).

Public API: ``KlarnaEmulator`` (subprocess runner, see client.py), ``DatasetSpec``
and ``Dataset`` (deterministic data, see dataset.py for the sign convention),
``FaultConfig`` (knobs, see faults.py). Run ``python -m klarna_emulator --help``.
"""
from .client import EmulatorStartError, KlarnaEmulator
from .dataset import Dataset, DatasetSpec
from .dates import format_datetime, parse_datetime
from .faults import FaultConfig

__all__ = ["KlarnaEmulator", "EmulatorStartError", "DatasetSpec", "Dataset", "FaultConfig",
           "parse_datetime", "format_datetime"]
