"""Klarna's published OpenAPI files, the copy this repository builds and tests against.

Every reader (the schema generator, the mock-server response builder, the emulator's tests) takes
the files' place from here, so a refresh touches this folder only (see README.md beside this file).
"""

from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parent
SETTLEMENTS_OPENAPI = REFERENCE_DIR / "klarna-settlements-api.openapi.yml"
ORDER_MANAGEMENT_OPENAPI = REFERENCE_DIR / "klarna-order-management-api.openapi.yml"
# Transcribed from Klarna's documentation page (no copy of Klarna's file was at hand): see the file's header.
DISPUTES_OPENAPI = REFERENCE_DIR / "klarna-disputes-api.openapi.yml"
