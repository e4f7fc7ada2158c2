"""Shell completion, as a shell uses it: `--show-completion` prints the hook, and the hook's call (the
`_SUBMITTER_COMPLETE` variable, set by that script) completes commands, options and sandbox subcommands.
Also: the commands of issue 19 are listed in `--help`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from submitter.cli import app

REPO = Path(__file__).resolve().parents[2]


def _submitter(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL, timeout=120)


def test_show_completion_prints_the_bash_hook() -> None:
    done = _submitter("--show-completion", "bash")
    assert done.returncode == 0, done.stderr
    assert "_SUBMITTER_COMPLETE=complete_bash" in done.stdout
    assert "complete -o default -F _submitter_completion submitter" in done.stdout


def test_the_hook_completes_commands_and_options() -> None:
    done = _submitter(_SUBMITTER_COMPLETE="complete_bash", COMP_WORDS="submitter re", COMP_CWORD="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rerun", "results", "report"]
    done = _submitter(_SUBMITTER_COMPLETE="complete_bash", COMP_WORDS="submitter status --w", COMP_CWORD="2")
    assert done.stdout.split() == ["--watch"]
    done = _submitter(_SUBMITTER_COMPLETE="complete_bash", COMP_WORDS="submitter sandbox do", COMP_CWORD="2")
    assert done.stdout.split() == ["down"]


def test_help_offers_completion_and_lists_report() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for text in ("--install-completion", "--show-completion", "  report ", "  status "):
        assert text in result.output
    result = CliRunner().invoke(app, ["status", "--help"])
    assert "--watch" in result.output and "--every" in result.output
