"""The harness the tests and the benchmarks share: what they need installed, and more below.

It lives in benchmarks/ (an installed package of this repository) and not in echovids/: it is tooling around a
deployment, not part of one, and no service image needs it; tests/ and benchmarks/ both import it.
"""

from __future__ import annotations

from importlib.util import find_spec


def missing_modules(needs: dict[str, str]) -> dict[str, str]:
    """Of ``needs`` (module -> the pyproject extra that installs it), the modules that are not installed."""
    return {module: extra for module, extra in sorted(needs.items()) if find_spec(module) is None}


def install_hint(missing: dict[str, str]) -> str:
    """The pip command that installs the extras of ``missing``."""
    extras = ",".join(sorted(set(missing.values())))
    return f"pip install -e '.[{extras}]'" + (" (or make bench-deps)" if "bench" in extras.split(",") else "")
