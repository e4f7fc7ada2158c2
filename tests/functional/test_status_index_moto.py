"""`status` through the run index against moto in-process: a submission's entries written by the real writers
(runtime/index.py put_status and Indexer, as staging, the agent and cancel use them), what the reader reads
from them and what from the documents, old submissions without an index, and the CLI's output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import moto_bucket
import pytest
from typer.testing import CliRunner

from submitter import contract, status_index, tracking
from submitter.aws.s3 import S3
from submitter.cli import app
from submitter.runtime import index

REGION = "us-east-1"
BUCKET = "findex"
WHERE = tracking.Where(BUCKET, "p")
LAYOUT = WHERE.layout
SUB = "exp-20261126-070000-abc123"


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3]:
    yield from moto_bucket.bucket(monkeypatch, tmp_path, BUCKET)


def _sweep(s3: S3, runs: int, indexed: bool = True) -> list[str]:
    """A sweep midway: run 0 running, run 1 failed, runs 2-5 succeeded, the rest queued; each change written as
    its writer does (staging's queued status, then the agent's attempt)."""
    ids = [f"{SUB}-{i}" for i in range(runs)]
    s3.put_json(LAYOUT.queued(SUB), {"runs": ids})
    for i, run in enumerate(ids):
        queued = contract.Status(run, SUB, "exp", contract.QUEUED, created_at="2026-11-26T07:00:00Z")
        if not indexed:
            s3.put_json(LAYOUT.status(run), queued.to_json())
            continue
        index.put_status(s3, LAYOUT, queued)
        if i > 5:
            continue
        agent = index.Indexer(LAYOUT, lambda key: s3.put_bytes(key, b""), s3.delete)
        agent.follow(queued)
        begun = queued.evolve(contract.STARTING, attempt=1, instance_type="c5.large", availability_zone="us-east-1b",
                              price=0.03, started_at="2026-11-26T07:01:00Z")
        for st in [begun, begun.evolve(contract.RUNNING, heartbeat_at="2026-11-26T07:02:00Z", cost=0.001 * i)]:
            s3.put_json(LAYOUT.status(run), st.to_json())
            agent.write(st)
        if i >= 1:
            end = contract.FAILED if i == 1 else contract.SUCCEEDED
            st = st.evolve(end, exit_code=int(i == 1), ended_at="2026-11-26T07:09:00Z", cost=0.01 * i,
                           reason="exit code 1" if i == 1 else None)
            s3.put_json(LAYOUT.status(run), st.to_json())
            agent.write(st)
    return ids


def test_the_index_settles_ended_and_queued_runs_and_documents_are_read_for_the_rest(s3: S3) -> None:
    ids = _sweep(s3, 40)
    keys = [o["Key"] for o in s3.objects(LAYOUT.index(SUB))]
    assert len(keys) == 40  # each writer deleted the entry it superseded: one per run

    rows = status_index.statuses(s3, WHERE, ids, budget=3)
    assert [r["run_id"] for r in rows] == ids
    documents = [r for r in rows if r.get("source") != status_index.INDEX]
    # the running run always (its document changes on every heartbeat), then the failed one (its reason)
    assert [r["run_id"] for r in documents][:2] == [ids[0], ids[1]] and len(documents) == 3
    assert rows[0]["state"] == contract.RUNNING and rows[0]["heartbeat_at"] == "2026-11-26T07:02:00Z"
    assert rows[1]["reason"] == "exit code 1"
    done = rows[4]
    assert done["source"] == status_index.INDEX and done["state"] == contract.SUCCEEDED
    assert (done["attempt"], done["cost"], done["instance_type"], done["availability_zone"]) == (
        1, 0.04, "c5.large", "us-east-1b")
    assert (done["started_at"], done["ended_at"], done["exit_code"]) == ("2026-11-26T07:01:00Z",
                                                                         "2026-11-26T07:09:00Z", 0)
    assert {r["state"] for r in rows[6:]} == {contract.QUEUED}
    # the rows agree with the documents on everything they carry
    full = tracking.statuses(s3, WHERE, ids)
    for row, doc in zip(rows, full, strict=True):
        assert {k: v for k, v in row.items() if k != "source"}.items() <= doc.items(), row
    assert status_index.statuses(s3, WHERE, ids, detail=True) == full


def test_a_small_submission_is_read_document_by_document(s3: S3) -> None:
    ids = _sweep(s3, 10)
    assert status_index.statuses(s3, WHERE, ids) == tracking.statuses(s3, WHERE, ids)


def test_a_submission_without_an_index_is_read_as_before(s3: S3) -> None:
    ids = _sweep(s3, 40, indexed=False)
    rows = status_index.statuses(s3, WHERE, ids, budget=3)
    assert status_index.from_index(rows) == 0 and rows == tracking.statuses(s3, WHERE, ids)


def test_an_entry_that_missed_a_change_is_a_step_behind_until_detail(s3: S3) -> None:
    ids = _sweep(s3, 40)
    late = contract.Status.from_json(s3.get_json(LAYOUT.status(ids[10])), ids[10])
    s3.put_json(LAYOUT.status(ids[10]), late.evolve(contract.CANCELLED, attempt=0).to_json())  # no entry written
    assert status_index.statuses(s3, WHERE, ids, budget=0)[10]["state"] == contract.QUEUED
    assert status_index.statuses(s3, WHERE, ids, detail=True)[10]["state"] == contract.CANCELLED


def test_a_tie_is_read_from_the_document(s3: S3) -> None:
    ids = _sweep(s3, 40)
    doc = contract.Status.from_json(s3.get_json(LAYOUT.status(ids[3])), ids[3])
    other = doc.evolve(contract.CANCELLED)  # a second writer's end of the same attempt
    s3.put_bytes(LAYOUT.index_entry(SUB, ids[3], index.entry(other)), b"")
    row = status_index.statuses(s3, WHERE, ids, budget=0)[3]
    assert "source" not in row and row["state"] == contract.SUCCEEDED


def test_put_status_supersedes_the_previous_entry(s3: S3) -> None:
    ids = _sweep(s3, 40)
    queued = contract.Status.from_json(s3.get_json(LAYOUT.status(ids[20])), ids[20])
    index.put_status(s3, LAYOUT, queued.evolve(contract.CANCELLED, reason="cancelled before it started"),
                     previous=queued)
    names = [o["Key"].rsplit("/", 1)[1] for o in s3.objects(LAYOUT.index_entry(SUB, ids[20]))]
    assert len(names) == 1 and index.parse(ids[20], names[0])["state"] == contract.CANCELLED  # type: ignore[index]


def test_the_cli_says_how_many_rows_came_from_the_index(s3: S3) -> None:
    ids = _sweep(s3, 80)
    out = CliRunner().invoke(app, ["status", SUB, "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)["runs"]
    assert [r["run_id"] for r in rows] == ids and status_index.from_index(rows) == 80 - status_index.DOCUMENT_READS
    table = CliRunner().invoke(app, ["status", SUB])
    assert table.exit_code == 0 and ids[79] in table.stdout
    assert f"{80 - status_index.DOCUMENT_READS} settled run(s) shown from the run index" in table.stderr
    detail = CliRunner().invoke(app, ["status", SUB, "--json", "--detail"])
    assert status_index.from_index(json.loads(detail.stdout)["runs"]) == 0


def test_complete_puts_the_entry_a_writer_missed_and_the_same_key_as_the_writer(s3: S3) -> None:
    """`submit --wait` may remove the role between an agent's final document and its entry: `complete` puts the
    entry from the document, the very key the agent would have put, so nothing ties."""
    ids = _sweep(s3, 8)
    running = contract.Status.from_json(s3.get_json(LAYOUT.status(ids[0])), ids[0])
    ended = running.evolve(contract.SUCCEEDED, exit_code=0, ended_at="2026-11-26T07:10:00Z", cost=0.0123456789)
    s3.put_json(LAYOUT.status(ids[0]), ended.to_json())  # the agent's last document; its entry never came
    states = tracking.statuses(s3, WHERE, ids)
    assert index.latest([o["Key"] for o in s3.objects(LAYOUT.index(SUB))], LAYOUT, SUB)[ids[0]][0]["state"] in (
        contract.ACTIVE)

    assert status_index.complete(s3, WHERE, states) == 1
    latest = index.latest([o["Key"] for o in s3.objects(LAYOUT.index(SUB))], LAYOUT, SUB)
    assert latest[ids[0]] == ({**index.parse(ids[0], index.entry(ended)), "seq": index.seq(ended)}, False)
    assert latest[ids[0]][0]["cost"] == 0.0123456789
    # the agent's own put, late, is the same key; a second `complete` has nothing to do
    index.Indexer(LAYOUT, lambda key: s3.put_bytes(key, b"")).write(ended)
    assert status_index.complete(s3, WHERE, tracking.statuses(s3, WHERE, ids)) == 0
    assert not index.latest([o["Key"] for o in s3.objects(LAYOUT.index(SUB))], LAYOUT, SUB)[ids[0]][1]
