"""The README's settings table names every setting (keeps the documentation in sync with echovids/settings.py)."""

from __future__ import annotations

import re
from pathlib import Path

from echovids.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_settings_table_lists_every_setting() -> None:
    documented = set(re.findall(r"^\| `(ECHOVIDS_[A-Z0-9_]+)` \|", README.read_text(), flags=re.MULTILINE))
    fields = {f"ECHOVIDS_{name.upper()}" for name in Settings.model_fields}
    assert not fields - documented, f"settings missing from README.md's table: {sorted(fields - documented)}"
    assert not documented - fields, f"README.md documents settings that do not exist: {sorted(documented - fields)}"
