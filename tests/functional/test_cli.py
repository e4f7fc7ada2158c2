"""The command line as a user meets it: names, help, not-built commands, the dry run with nothing at hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from submitter.cli import app

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["submit", "status", "logs", "results", "cancel", "cost", "prices", "gc", "ssh", "notebook",
            "init", "doctor", "sandbox"]
RUN = "exp1-20261126-070000-abc123-0"


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


@pytest.mark.parametrize("argv", [["ssh", RUN, "--cidr", "0.0.0.0/0"], ["notebook", RUN, "--cidr", "10.0.0.0/8"]])
def test_access_never_opens_port_22_wider_than_one_site(argv: list[str]) -> None:
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "--cidr" in result.output and "wider than one site" in result.output


def test_global_flags_work_after_the_command() -> None:
    # cancel refuses before any AWS call when it cannot ask (CliRunner's stdin is not a terminal)
    result = CliRunner().invoke(app, ["cancel", "r", "--debug"])
    assert result.exit_code == 2
    assert "Traceback" in result.output


@pytest.mark.parametrize("argv", [["cancel", "some-run"], ["gc"]])
def test_destructive_commands_refuse_without_a_terminal_or_yes(argv: list[str], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "submitter", *argv], cwd=REPO, stdin=subprocess.DEVNULL,
                            env={**_clean_env(tmp_path), "SUBMITTER_BUCKET": "no-such-bucket-here"},
                            capture_output=True, text=True, timeout=60)
    if argv[0] == "gc":  # gc lists first (needs AWS), so without credentials it fails there, before any removal
        assert result.returncode != 0 and "removed" not in result.stdout
        return
    assert result.returncode == 2, result.stderr
    assert "not confirmed (no terminal to ask on)" in result.stderr and "--yes" in result.stderr


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """No AWS credentials or config, no docker engine, an empty home."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }


def test_dry_run_json_needs_no_credentials_and_no_engine(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "submitter", "submit", "jobs/exp1.yaml", "--dry-run", "--json"],
        cwd=REPO, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    for key in ("runs", "image", "launch", "user_data", "iam_policy", "estimate"):
        assert key in plan
    assert [r["sweep"] for r in plan["runs"]] == [{"LR": "0.1"}, {"LR": "0.05"}]
    assert plan["placement"]["note"] == "spot prices unknown (no AWS credentials)"
    assert plan["user_data"].startswith("#!/bin/bash")
    assert not (tmp_path / "home" / ".submitter").exists()  # created nothing, not even local state


def test_dry_run_human_readable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "submitter", "submit", "jobs/exp1.yaml", "--dry-run"],
        cwd=REPO, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "2 run(s) on the pool backend" in result.stdout and "1 spot worker(s) at a time" in result.stdout
    assert "dry run: nothing was built or created" in result.stdout


def test_submit_console_script_is_submitter_submit(tmp_path: Path) -> None:
    code = ("import sys; sys.argv=['submit','jobs/exp1.yaml','--dry-run','--json']; "
            "from submitter.cli import submit_main; submit_main()")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_clean_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["job"] == "exp1"


def test_cli_import_is_light() -> None:
    code = ("import sys, submitter.cli; heavy = [m for m in ('boto3', 'botocore', 'docker', 'paramiko', 'pydantic',"
            " 'yaml', 'rich.console') if m in sys.modules]; print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
