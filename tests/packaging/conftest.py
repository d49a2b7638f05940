"""Fixtures for the packaging tests (the helpers live in ``promhelpers.py`` next to this file)."""

from __future__ import annotations

import sys
from pathlib import Path

# Make the plain helper module importable whatever pytest's --import-mode (as tests/kernel does).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from promhelpers import backends, healthd, promtool  # noqa: E402

__all__ = ["backends", "healthd", "promtool"]
