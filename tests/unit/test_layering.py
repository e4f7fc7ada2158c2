"""The layering rules CI enforces: boto3/botocore and SDK clients only under submitter/aws/ (plus the sandbox
and the instance runtime), no module under submitter/ over 400 lines, and the S3 layout and run states spelled
only in the contract package (submitter/contract/)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "submitter"
SDK_ALLOWED = ("aws", "sandbox", "runtime")  # folders under submitter/ that may talk to boto3 directly
MAX_LINES = 400
VIOLATION = "import boto3\nfrom botocore.exceptions import ClientError\n\n__all__ = ['boto3', 'ClientError']\n"

def _ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # ruff comes with the dev extra (pyproject.toml), so CI always has it: a missing ruff fails here, loudly.
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=REPO, input=stdin,
                          text=True, capture_output=True, check=False)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _in_contract(path: Path) -> bool:
    """A module of the contract package (submitter/contract/), the one place that spells keys and states."""
    return path.relative_to(PACKAGE).parts[0] == "contract"


def _sdk_allowed(path: Path) -> bool:
    return path.relative_to(PACKAGE).parts[0] in SDK_ALLOWED


def test_ruff_refuses_boto3_outside_the_aws_folder() -> None:
    result = _ruff("--select", "TID251", "--stdin-filename", "submitter/layering_violation.py", "-",
                   stdin=VIOLATION)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TID251" in result.stdout and "`boto3` is banned" in result.stdout
    assert "`botocore` is banned" in result.stdout
    assert "only under submitter/aws/" in result.stdout


@pytest.mark.parametrize("allowed", ["submitter/aws/x.py", "submitter/sandbox/x.py", "submitter/runtime/x.py",
                                     "tests/unit/x.py", "bench/x.py"])
def test_ruff_allows_boto3_in_the_allowed_folders(allowed: str) -> None:
    result = _ruff("--stdin-filename", allowed, "-", stdin=VIOLATION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_repository_is_ruff_clean() -> None:
    result = _ruff(".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_under_submitter_is_over_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_sdk_clients_are_made_only_under_the_aws_folder() -> None:
    # A client is asked for by service name only inside an adapter (`ec2.client(aws)` hands it out).
    call = re.compile(r"\.client\(\s*['\"]")
    found = [f"{p.relative_to(REPO)}:{i}" for p in _modules() if not _sdk_allowed(p)
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if call.search(line)]
    assert found == []


# What only the contract package may spell: the documents' names and the layout's folders.
KEY_PATH = re.compile(r"(status|submission|batch|runs|spec)\.json|\b(runs|submissions|inputs|instances)/"
                      r"|logs/(chunks|container|agent)|\b(outputs|checkpoints)/")
STATE = re.compile(r"queued|starting|running|succeeded|failed|interrupted|cancelled")
# Words that are EC2's or the sandbox's own instance states, not a run's: allowed where they are EC2's.
EC2_STATE_MODULES = ("sandbox", "aws", "backends/pool", "access")


def _strings(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_the_key_layout_is_spelled_only_in_the_contract() -> None:
    found = [f"{p.relative_to(REPO)}:{line}: {text[:60]!r}" for p in _modules() if not _in_contract(p)
             for line, text in _strings(p) if KEY_PATH.search(text)]
    assert found == []


def _state_uses(path: Path) -> list[tuple[int, str]]:
    """State literals the code decides on: compared with (`== "failed"`, `in ("queued", ...)`) or written as a
    document's `state`. Prose that mentions one (a reason, a message) is not a use."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        values: list[ast.expr] = []
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                values += side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
        elif isinstance(node, ast.Dict):
            values += [v for k, v in zip(node.keys, node.values, strict=True)
                       if isinstance(k, ast.Constant) and k.value == "state"]
        elif isinstance(node, ast.keyword) and node.arg == "state":
            values.append(node.value)
        found += [(v.lineno, v.value) for v in values
                  if isinstance(v, ast.Constant) and isinstance(v.value, str) and STATE.fullmatch(v.value)]
    return found


def test_run_states_are_named_only_in_the_contract() -> None:
    def ec2s(path: Path) -> bool:
        return str(path.relative_to(PACKAGE)).startswith(EC2_STATE_MODULES)

    found = [f"{p.relative_to(REPO)}:{line}: {text!r}" for p in _modules()
             if not _in_contract(p) and not ec2s(p) for line, text in _state_uses(p)]
    assert found == []
