"""`status --watch` against moto in-process, through the CLI: it redraws until every run has ended, then prints
the final table; refused with --json. The loop's end condition itself is in tests/unit/test_watch.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import moto_bucket
import pytest
from typer.testing import CliRunner

from submitter import tracking
from submitter.aws.s3 import S3
from submitter.cli import app

REGION = "us-east-1"
BUCKET = f"fwatch-{uuid.uuid4().hex[:8]}"
LAYOUT = tracking.Where(BUCKET, "p").layout
HANG_GUARD_S = 120  # generous: the watch ends within a few polls; this only stops a broken loop hanging CI


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3]:
    yield from moto_bucket.bucket(monkeypatch, tmp_path, BUCKET)


def _submission(s3: S3, states: list[str]) -> tuple[str, list[str]]:
    sub = f"fwatch-20261130-220000-{uuid.uuid4().hex[:6]}"
    ids = [f"{sub}-{i}" for i in range(len(states))]
    s3.put_json(LAYOUT.queued(sub), {"runs": ids})
    for run_id, state in zip(ids, states, strict=True):
        s3.put_json(LAYOUT.status(run_id), {"run_id": run_id, "submission_id": sub, "job": "fwatch", "state": state})
    return sub, ids


def _invoke(args: list[str]) -> tuple[int, str]:
    """The CLI in a thread, so a loop that never ends fails the test instead of hanging it."""
    done: dict[str, object] = {}

    def run() -> None:
        result = CliRunner().invoke(app, args)
        done["code"], done["output"] = result.exit_code, result.output

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    assert not worker.is_alive(), f"`submitter {' '.join(args)}` did not end"
    return int(str(done["code"])), str(done["output"])


def test_watch_redraws_until_the_last_run_ends_then_prints_the_final_table(s3: S3) -> None:
    sub, ids = _submission(s3, ["succeeded", "running", "queued"])
    started = time.monotonic()

    def the_runs_finish() -> None:  # what the workers would write, while the watch is polling
        time.sleep(1.0)
        s3.put_json(LAYOUT.status(ids[1]), {"run_id": ids[1], "submission_id": sub, "state": "failed",
                                            "reason": "exit code 1"})
        time.sleep(0.5)
        s3.put_json(LAYOUT.status(ids[2]), {"run_id": ids[2], "submission_id": sub, "state": "succeeded"})

    writer = threading.Thread(target=the_runs_finish, daemon=True)
    writer.start()
    code, output = _invoke(["status", sub, "--watch", "--every", "0.1"])
    writer.join(HANG_GUARD_S)
    assert code == 0, output
    assert time.monotonic() - started >= 1.5  # it kept watching until the last write, not one reading
    assert "watching 3 run(s), every 0.1 s" in output
    final = output.split("Ctrl-C stops watching)", 1)[1]  # the live view is transient: only the final table
    assert [line.split()[1] for line in final.splitlines() if line.startswith("│ fwatch-")] == [
        ids[0], ids[1], ids[2]]
    assert "failed (exit code 1)" in final and final.count("succeeded") == 2
    assert "running" not in final and "queued" not in final


def test_watch_of_ended_runs_prints_the_table_once_and_returns(s3: S3) -> None:
    sub, ids = _submission(s3, ["succeeded", "cancelled"])
    code, output = _invoke(["status", sub, "--watch"])  # the default 5 s is never waited: all have ended
    assert code == 0, output
    assert ids[0] in output and ids[1] in output


def test_watch_with_json_or_a_bad_interval_is_refused_before_any_read(s3: S3) -> None:
    sub, _ = _submission(s3, ["running"])
    code, output = _invoke(["status", sub, "--watch", "--json"])
    assert code == 2 and "--watch draws a live table" in output and "Traceback" not in output
    code, output = _invoke(["status", sub, "--watch", "--every", "0"])
    assert code == 2 and "--every: 0.0 is not a positive number of seconds" in output
