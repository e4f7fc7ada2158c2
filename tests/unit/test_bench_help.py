"""`python -m bench --help` prints its usage and runs nothing; an unknown option or name is refused (exit 2)
before any benchmark starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_the_options_and_every_benchmark_and_runs_none() -> None:
    for flag in ("--help", "-h"):
        done = _bench(flag)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: python -m bench [--smoke] [NAME...]")
        assert "--smoke" in done.stdout
        listed = [line.split()[0] for line in done.stdout.split("benchmarks:", 1)[1].splitlines() if line.strip()]
        assert listed == BENCHMARKS
        assert "== bench" not in done.stderr  # nothing ran


def test_an_unknown_option_or_benchmark_is_refused_before_anything_runs() -> None:
    done = _bench("--smoke", "--fast", "nonesuch")
    assert done.returncode == 2
    assert "no such option or benchmark: --fast nonesuch" in done.stderr and "== bench" not in done.stderr
