"""Benchmarks, run as `echovids bench ...` from a checkout."""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def reach_test_fixtures() -> None:
    """Make ``tests`` importable: the VGGish-shaped test model and the numpy front end are test fixtures
    (tests/vggish_stub.py, tests/melspec.py), not service code, and a benchmark runs from a checkout, where tests/
    sits beside this package."""
    if str(CHECKOUT) not in sys.path:
        sys.path.append(str(CHECKOUT))
