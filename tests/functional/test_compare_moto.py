"""`compare` against moto in-process: rows gathered from the S3 documents of a sweep (status, run record, final
metrics, metrics stream), and the command through typer's CliRunner (table, --json, --csv, its errors)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import moto_bucket
import pytest
from typer.testing import CliRunner

from submitter import compare, contract, tracking
from submitter.aws.s3 import S3
from submitter.cli import app

REGION = "us-east-1"
BUCKET = "fcompare"
WHERE = tracking.Where(BUCKET, "p")
LAYOUT = WHERE.layout
SUB = "sweep-20261130-100000-c0ffee"


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3]:
    yield from moto_bucket.bucket(monkeypatch, tmp_path, BUCKET)


def _sweep(s3: S3, runs: int) -> list[str]:
    """A submission of `runs` runs: LR swept; run i's accuracy is i/runs; run 1 failed without metrics.json; the
    last is still running with only a stream; run 0 has an empty stream."""
    ids = [f"{SUB}-{i}" for i in range(runs)]
    s3.put_json(LAYOUT.queued(SUB), {"runs": ids})
    for i, run_id in enumerate(ids):
        last = i == runs - 1
        state = "running" if last else "failed" if i == 1 else "succeeded"
        s3.put_json(LAYOUT.run_spec(run_id), {"run_id": run_id, "sweep": {"LR": f"0.{i}"}})
        s3.put_json(LAYOUT.status(run_id), {
            "run_id": run_id, "submission_id": SUB, "state": state, "attempt": 1, "cost": 0.01 * i,
            "started_at": "2026-11-30T10:01:00Z", **({} if last else {"ended_at": "2026-11-30T10:02:00Z"}),
            "timeline": [{"attempt": 1, "instance_id": f"i-{i}", "started_at": "2026-11-30T10:01:00Z",
                          "ended_at": None if last else "2026-11-30T10:02:00Z", "ending": None if last else state}]})
        stream = "".join(json.dumps({"step": s, "accuracy": i / runs * s / 2}) + "\n" for s in (1, 2))
        s3.put_bytes(LAYOUT.metrics_stream(run_id), b"" if i == 0 else stream.encode())
        if i != 1 and not last:
            s3.put_json(LAYOUT.final_metrics(run_id), {"accuracy": i / runs, "loss": 1 - i / runs, "status": "done"})
    return ids


def test_gather_reads_every_document_of_a_hundred_runs_quickly(s3: S3) -> None:
    ids = _sweep(s3, 100)
    started = time.monotonic()
    rows = compare.gather(s3, WHERE, ids)
    took = time.monotonic() - started
    assert [r["run_id"] for r in rows] == ids
    assert rows[5]["sweep"] == {"LR": "0.5"} and rows[5]["metrics"] == {"accuracy": 0.05, "loss": 0.95}
    assert rows[5]["curves"] == {"accuracy": [[1, 0.025], [2, 0.05]]}
    assert rows[5]["runtime_s"] == 60.0 and rows[5]["timeline"][0]["instance_id"] == "i-5"
    assert rows[0]["curves"] == {} and rows[0]["metrics"]["accuracy"] == 0.0  # an empty stream is no stream
    assert rows[1]["state"] == "failed" and rows[1]["metrics"] == {"accuracy": 0.01}  # the stream's latest
    assert rows[99]["state"] == "running" and rows[99]["timeline"][0]["ended_at"] is None
    best = compare.order(rows)
    assert best[0]["run_id"] == f"{SUB}-99" and best[-1]["run_id"] == f"{SUB}-0"  # 99: its stream's latest, 0.99
    print(f"gather of 100 runs (400 objects, moto in-process): {took:.2f} s")


def test_the_command_in_its_three_forms(s3: S3) -> None:
    ids = _sweep(s3, 4)
    runner = CliRunner()
    result = runner.invoke(app, ["compare", SUB, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [r["run_id"] for r in doc["runs"]] == [ids[3], ids[2], ids[1], ids[0]]  # accuracy .75, .5, .25, 0
    assert doc["sort"] == {"metric": "accuracy", "direction": "max"}
    assert doc["runs"][0]["curves"]["accuracy"] == [[1, 0.375], [2, 0.75]]

    by_cost = json.loads(runner.invoke(app, ["compare", "sweep", "--json", "--sort", "cost"]).output)  # the job
    assert [r["run_id"] for r in by_cost["runs"]] == ids

    result = runner.invoke(app, ["compare", SUB, "--csv", "--sort", "loss"])
    assert result.exit_code == 0, result.output
    table = list(csv.reader(io.StringIO(result.output)))
    assert table[0][:5] == ["run_id", "state", "sweep.LR", "metric.accuracy", "metric.loss"]
    assert [line[0] for line in table[1:]] == [ids[2], ids[0], ids[1], ids[3]]  # runs without a loss last

    result = runner.invoke(app, ["compare", SUB])
    assert result.exit_code == 0, result.output
    assert "best first by accuracy (higher is better)" in result.output
    assert ids[1] in result.output and "failed" in result.output and "0:01:00" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--json", "--csv"], "--json and --csv were both given"),
    (["--sort", "f1"], "no run has a metric 'f1'"),
])
def test_the_command_refuses_what_it_cannot_do(s3: S3, args: list[str], message: str) -> None:
    _sweep(s3, 3)
    result = CliRunner().invoke(app, ["compare", SUB, *args])
    assert result.exit_code == 2 and message in result.output and "next:" in result.output
    assert "Traceback" not in result.output


def test_an_empty_object_read_with_a_limit_is_empty(s3: S3) -> None:
    s3.put_bytes("p/empty", b"")
    assert s3.get_bytes("p/empty", limit=10) == b"" and s3.get_bytes("p/missing", limit=10) is None
    s3.put_bytes("p/big", b"x" * 100)
    assert s3.get_bytes("p/big", limit=10) == b"x" * 10


def test_a_forged_run_id_is_never_a_key(s3: Any) -> None:
    rows = compare.gather(s3, WHERE, ["../../etc", f"{SUB}-0"])
    assert rows[0]["state"] == contract.UNKNOWN and rows[0]["metrics"] == {}
