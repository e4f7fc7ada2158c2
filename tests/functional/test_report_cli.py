"""`submitter report` against moto in-process: a sweep with a succeeded, a failed and an interrupted-then-running
run, gathered by submitter/compare.py from S3, written as one HTML file (or to stdout), errors before any read.
The page's drawing is checked in a browser by test_report_chromium.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import moto_bucket
import pytest
from typer.testing import CliRunner

from submitter import tracking
from submitter.aws.s3 import S3
from submitter.cli import app

pytest.importorskip("submitter.compare", reason="needs submitter/compare.py (issue 19, helper metrics' branch)")

REGION = "us-east-1"
BUCKET = f"freport-{uuid.uuid4().hex[:8]}"
LAYOUT = tracking.Where(BUCKET, "p").layout
SUB = f"sweep-20261130-100000-{uuid.uuid4().hex[:6]}"


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3]:
    yield from moto_bucket.bucket(monkeypatch, tmp_path, BUCKET)


def _attempt(n: int, instance: str, start: str, end: str | None, ending: str | None) -> dict[str, object]:
    return {"attempt": n, "instance_id": instance, "instance_type": "g4dn.xlarge",
            "availability_zone": "us-east-1a", "started_at": start, "ended_at": end, "ending": ending}


def _sweep(s3: S3) -> list[str]:
    """Run 0 succeeded, run 1 failed, run 2 was interrupted and runs again (its curve partial)."""
    ids = [f"{SUB}-{i}" for i in range(3)]
    s3.put_json(LAYOUT.queued(SUB), {"runs": ids})
    states = ["succeeded", "failed", "running"]
    timelines = [
        [_attempt(1, "i-0", "2026-11-30T10:00:00Z", "2026-11-30T10:10:00Z", "succeeded")],
        [_attempt(1, "i-1", "2026-11-30T10:00:00Z", "2026-11-30T10:03:00Z", "failed")],
        [_attempt(1, "i-2", "2026-11-30T10:00:00Z", "2026-11-30T10:04:00Z", "interrupted"),
         _attempt(2, "i-3", "2026-11-30T10:05:00Z", None, None)],
    ]
    for i, run_id in enumerate(ids):
        s3.put_json(LAYOUT.run_spec(run_id), {"run_id": run_id, "sweep": {"lr": f"0.{i}"}})
        s3.put_json(LAYOUT.status(run_id), {
            "run_id": run_id, "submission_id": SUB, "state": states[i], "attempt": len(timelines[i]),
            "cost": 0.01 * (i + 1), "started_at": "2026-11-30T10:00:00Z", "timeline": timelines[i],
            **({} if i == 2 else {"ended_at": timelines[i][-1]["ended_at"]})})
        stream = "".join(json.dumps({"step": s, "loss": 1 / (s + i + 1)}) + "\n" for s in range(5 - i))
        s3.put_bytes(LAYOUT.metrics_stream(run_id), stream.encode())
    return ids


def test_report_writes_one_self_contained_page_of_the_sweep(s3: S3, tmp_path: Path) -> None:
    ids = _sweep(s3)
    result = CliRunner().invoke(app, ["report", SUB])
    assert result.exit_code == 0, result.output
    page_file = tmp_path / f"report-{SUB}.html"
    assert f"{page_file}: 3 run(s), 4 chart(s); 1 still going" in result.output
    page = page_file.read_text(encoding="utf-8")
    assert "<script src=" not in page and page.count("plotly.js v") == 1
    for run_id in ids:
        assert f"<td>{run_id}</td>" in page
    for chart in ("chart-metric-0", "chart-cost", "chart-runtime", "chart-timeline"):
        assert f'"{chart}"' in page
    assert '"name":"interrupted"' in page and '"name":"running"' in page and '"name":"failed"' in page

    by_job = CliRunner().invoke(app, ["report", "sweep", "-o", "-", "--sort", "loss:min"])
    assert by_job.exit_code == 0, by_job.output
    assert by_job.output.startswith("<!DOCTYPE html>") and f"<td>{ids[0]}</td>" in by_job.output


def test_report_refuses_a_bad_output_or_target_before_reading(s3: S3, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", SUB, "-o", str(tmp_path / "missing" / "r.html")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["report", SUB, "-o", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output
    result = CliRunner().invoke(app, ["report", "../etc/passwd"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["report", SUB])  # nothing was submitted under this id
    assert result.exit_code == 2 and "no run, submission or job" in result.output
