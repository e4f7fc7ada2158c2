"""Run the CLI in-process from a directory, as a user would from there (shared by the spec tests)."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from submitter.cli import app


def invoke(args: list[str], cwd: Path) -> tuple[int, str]:
    """The exit code and output of `submitter ARGS` run in `cwd`."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(old)
    return result.exit_code, result.output
