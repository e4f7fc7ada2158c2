"""SUBMITTER_BUDGET at the command line: the dry run shows the check without reading the month's spend (no
credentials needed), and bad input is refused with exit 2 before any AWS call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *args: str, budget: str | None = "25") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO),
           "DOCKER_HOST": "unix:///nonexistent/docker.sock", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    if budget is not None:
        env["SUBMITTER_BUDGET"] = budget
    return subprocess.run([sys.executable, "-m", "submitter", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_dry_run_shows_the_budget_check_without_the_spend(tmp_path: Path) -> None:
    result = _run(tmp_path, "submit", "jobs/exp1.yaml", "--dry-run", "--json", "--budget-mode", "expected")
    assert result.returncode == 0, result.stderr
    check = json.loads(result.stdout)["budget"]
    assert check["budget"] == 25.0 and check["mode"] == "expected" and check["spent"] is None
    assert check["fits"] is None and check["ledger"].startswith("not read")
    human = _run(tmp_path, "submit", "jobs/exp1.yaml", "--dry-run")
    assert human.returncode == 0, human.stderr
    assert "budget: $25.00 for" in human.stdout and "the month's spend was not read" in human.stdout
    without = _run(tmp_path, "submit", "jobs/exp1.yaml", "--dry-run", "--json", budget=None)
    assert "budget" not in json.loads(without.stdout)


@pytest.mark.parametrize(("args", "budget", "named"), [
    (["submit", "jobs/exp1.yaml", "--dry-run"], "lots", "SUBMITTER_BUDGET"),
    (["submit", "jobs/exp1.yaml", "--dry-run", "--budget-mode", "best"], "25", "--budget-mode"),
    (["cost", "--month", "2026-13"], "25", "--month"),
    (["cost", "--month", "2026-11", "--since", "2026-11-01"], "25", "submitter cost"),
])
def test_bad_input_is_refused_before_any_aws_call(tmp_path: Path, args: list[str], budget: str, named: str) -> None:
    result = _run(tmp_path, *args, budget=budget)
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr and "next:" in result.stderr and "Traceback" not in result.stderr
