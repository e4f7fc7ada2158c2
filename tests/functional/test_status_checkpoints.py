"""`status` shows each run's checkpoint age and the runtime's stale warning (issue 18), table and --json, through
the CLI against moto in-process."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from submitter import contract
from submitter.cli import app

BUCKET = "fckpt"
SUB = "ck-20261130-070000-abc123"
WARNING = ("no new checkpoint for 42 min (limits.checkpoint_warn_after is 30 min): the job may have stopped "
           "checkpointing")


@pytest.fixture()
def s3(moto_account: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    for name in ("SUBMITTER_SANDBOX", "SUBMITTER_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUBMITTER_BUCKET", BUCKET)
    monkeypatch.setenv("SUBMITTER_REGION", "us-east-1")
    monkeypatch.setenv("SUBMITTER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with moto_account(BUCKET, "train") as (session, _):
        yield session.client("s3")


def _put_status(s3: Any, run: str, **fields: Any) -> None:
    doc = {"run_id": run, "submission_id": SUB, "state": "running", "attempt": 1, **fields}
    s3.put_object(Bucket=BUCKET, Key=contract.Layout("submitter").status(run), Body=json.dumps(doc).encode())


def test_status_shows_the_checkpoint_age_and_the_stale_warning(s3: Any) -> None:
    ago = contract.iso(datetime.now(timezone.utc) - timedelta(minutes=42))
    _put_status(s3, f"{SUB}-0", checkpoint_at=ago, checkpoint_warning=WARNING)
    _put_status(s3, f"{SUB}-1")  # no checkpoint yet, no warning
    _put_status(s3, f"{SUB}-2", checkpoint_at=["forged"])  # what a job could write: never a crash
    s3.put_object(Bucket=BUCKET, Key=contract.Layout("submitter").queued(SUB),
                  Body=json.dumps({"runs": [f"{SUB}-{i}" for i in range(3)]}).encode())

    result = CliRunner().invoke(app, ["status", SUB, "--json"])
    assert result.exit_code == 0, result.output
    runs = {r["run_id"]: r for r in json.loads(result.stdout)["runs"]}
    assert 42 * 60 <= runs[f"{SUB}-0"]["checkpoint_age_s"] < 45 * 60
    assert runs[f"{SUB}-0"]["checkpoint_warning"] == WARNING and runs[f"{SUB}-0"]["checkpoint_at"] == ago
    assert "checkpoint_age_s" not in runs[f"{SUB}-1"] and "checkpoint_age_s" not in runs[f"{SUB}-2"]

    table = CliRunner().invoke(app, ["status", SUB])
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if f"{SUB}-0 " in line)
    assert "42m ago !" in row or "43m ago !" in row
    assert f"{SUB}-0: {WARNING}" in table.stdout
