"""Unit-test helpers shared by several files: the runtime's in-memory store (runtime_memory.py) is importable
as a plain module (pytest runs with --import-mode=importlib, which puts no test folder on sys.path)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402 - after the path set-up above

NO_INTERNET = "http://127.0.0.1:9/spot-advisor-data.json"  # loopback port 9: refused at once


@pytest.fixture(autouse=True)
def _no_spot_advisor_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test fetches AWS's Spot Instance Advisor data: the default URL and SUBMITTER_SPOT_ADVISOR_URL point at
    a closed loopback port (see tests/functional/conftest.py)."""
    from submitter.placement import advisor

    monkeypatch.setattr(advisor, "URL", NO_INTERNET)
    monkeypatch.setenv("SUBMITTER_SPOT_ADVISOR_URL", NO_INTERNET)
