"""The HTML report as a person sees it: rendered by headless Chromium (Debian's `chromium`, installed by
scripts/setup), its charts counted in the DOM plotly.js drew, no console message, and a screenshot kept under
tests/artifacts/ (gitignored) for a human to look at.

Chromium's `--enable-logging=stderr` writes every console message and uncaught error of the page as a
`CONSOLE` line but without its level, so any console message at all fails the test (the report logs nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from submitter import report

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
GENERATED = datetime(2026, 11, 30, 22, 15, tzinfo=timezone.utc)
HOSTILE = "<img src=x onerror=\"console.error('xss-metric')\">"
TIMEOUT_S = 180  # a hang guard under load, not a timing assertion


def _chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed: scripts/setup installs Debian's `chromium` package")
    pytest.skip("chromium is not installed (run scripts/setup); in CI (CI=true) this fails instead")


def _browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on `page` as root can run it here (no sandbox, no GPU, nothing fetched)."""
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=10000", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=True)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


class _Drawn(HTMLParser):
    """Per chart (a div whose id starts with `chart-`): plotly's drawn traces and marks (points and bars)."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, int]] = {}
        self.images = 0  # the report has none: one here came from an injected string
        self.scripts: list[str] = []  # the source of each inline script element
        self._chart: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        self.images += tag == "img"
        self._in_script = tag == "script"
        if tag == "script":
            self.scripts.append("")
        if tag == "div" and (found.get("id") or "").startswith("chart-"):
            self._chart = str(found["id"])
            self.charts[self._chart] = {"traces": 0, "marks": 0}
        elif self._chart and tag == "g" and "trace" in classes:
            self.charts[self._chart]["traces"] += 1
        elif self._chart and "point" in classes and tag in ("g", "path"):
            # a bar is <g class="point"><path>; a line's marker is <path class="point">
            self.charts[self._chart]["marks"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def _attempt(n: int, instance: str, zone: str, start: str, end: str | None, ending: str | None) -> dict[str, Any]:
    return {"attempt": n, "instance_id": instance, "instance_type": "g4dn.xlarge", "availability_zone": zone,
            "started_at": start, "ended_at": end, "ending": ending}


def _rows() -> list[dict[str, Any]]:
    """Four runs: succeeded, failed (hostile sweep value and metric name), interrupted then resumed and still
    running (partial curves), and queued with nothing yet."""
    sub = "exp1-20261130-220000-abc123"
    return [
        {"run_id": f"{sub}-r0", "submission_id": sub, "state": "succeeded", "sweep": {"lr": 0.1},
         "metrics": {"loss": 0.1, "accuracy": 0.93},
         "curves": {"loss": [[i, 1 / (i + 1)] for i in range(10)], "accuracy": [[i, i / 10] for i in range(10)]},
         "runtime_s": 600, "attempts": 1, "interruptions": 0, "cost": 0.0123,
         "timeline": [_attempt(1, "i-0a", "us-east-1a", "2026-11-30T22:00:00Z", "2026-11-30T22:10:00Z",
                               "succeeded")]},
        {"run_id": f"{sub}-r1", "submission_id": sub, "state": "failed",
         "sweep": {"lr": "<script>console.error('xss-sweep')</script>"}, "metrics": {HOSTILE: 1.0},
         "curves": {"loss": [[i, 2 / (i + 1)] for i in range(4)], HOSTILE: [[0, 1.0], [1, 2.0]]},
         "runtime_s": 200, "attempts": 1, "interruptions": 0, "cost": 0.004,
         "timeline": [_attempt(1, "i-0b", "us-east-1b", "2026-11-30T22:00:00Z", "2026-11-30T22:03:20Z", "failed")]},
        {"run_id": f"{sub}-r2", "submission_id": sub, "state": "running", "sweep": {"lr": 0.001}, "metrics": {},
         "curves": {"loss": [[i, 3 / (i + 1)] for i in range(6)], "accuracy": [[0, 0.0], [5, 0.2], [10, 0.4]]},
         "runtime_s": 480, "attempts": 2, "interruptions": 1, "cost": None,
         "timeline": [_attempt(1, "i-0c", "us-east-1a", "2026-11-30T22:00:00Z", "2026-11-30T22:05:00Z",
                               "interrupted"),
                      _attempt(2, "i-0d", "us-east-1c", "2026-11-30T22:06:00Z", None, None)]},
        {"run_id": f"{sub}-r3", "submission_id": sub, "state": "queued", "sweep": {"lr": 1.0}, "metrics": {},
         "curves": {}, "runtime_s": None, "attempts": 0, "interruptions": 0, "cost": None, "timeline": []},
    ]


def _expected(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """What the rows imply, worked out here independently of the report module."""
    metrics: list[str] = []
    for r in rows:
        metrics += [m for m in r["curves"] if m not in metrics]
    out = {f"chart-metric-{i}": {"traces": sum(1 for r in rows if r["curves"].get(m)),
                                 "marks": sum(len(r["curves"].get(m, [])) for r in rows)}
           for i, m in enumerate(metrics)}
    for chart, key in (("chart-cost", "cost"), ("chart-runtime", "runtime_s")):
        out[chart] = {"traces": 1, "marks": sum(1 for r in rows if r[key] is not None)}
    attempts = [a for r in rows for a in r["timeline"]]
    out["chart-timeline"] = {"traces": len({a["ending"] or "running" for a in attempts}), "marks": len(attempts)}
    return out


def test_report_draws_every_chart_in_chromium(tmp_path: Path) -> None:
    rows = _rows()
    page = tmp_path / "report.html"
    page.write_text(report.render(rows, "exp1 (4 runs)", GENERATED), encoding="utf-8")

    shown = _browse(page, tmp_path / "profile-dom", "--dump-dom")
    assert _console(shown.stderr) == []
    drawn = _Drawn()
    drawn.feed(shown.stdout)
    expected = _expected(rows)
    assert expected["chart-metric-0"] == {"traces": 3, "marks": 20}  # the arithmetic of _expected, checked once
    assert drawn.charts == expected
    # the hostile strings were shown as text, never run: no console message above, and no element of theirs
    assert drawn.images == 0
    assert len(drawn.scripts) == 1 + len(expected)  # plotly.js and one per chart: none came from a string
    assert "&lt;script&gt;console.error('xss-sweep')&lt;/script&gt;" in shown.stdout  # shown in the table

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _browse(page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2600",
            "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a blank 1280x2600 PNG is a few KB; charts make it far larger


def test_an_empty_report_says_so_and_draws_nothing(tmp_path: Path) -> None:
    sub = "exp1-20261130-220000-abc123"
    rows: list[dict[str, Any]] = [
        {"run_id": f"{sub}-r0", "submission_id": sub, "state": "queued", "sweep": {}, "metrics": {}, "curves": {},
         "runtime_s": None, "attempts": 0, "interruptions": 0, "cost": None, "timeline": []}]
    page = tmp_path / "empty.html"
    page.write_text(report.render(rows, "exp1", GENERATED), encoding="utf-8")
    shown = _browse(page, tmp_path / "profile", "--dump-dom")
    assert _console(shown.stderr) == []
    drawn = _Drawn()
    drawn.feed(shown.stdout)
    assert drawn.charts == {}
    assert "No metric curves yet" in shown.stdout
    assert "No attempt has started yet" in shown.stdout


def test_the_console_check_catches_a_script_error(tmp_path: Path) -> None:
    """The detector above can fail: a page that throws is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>null.x;</script></body></html>", encoding="utf-8")
    shown = _browse(page, tmp_path / "profile", "--dump-dom")
    assert any("Uncaught TypeError" in line for line in _console(shown.stderr))
