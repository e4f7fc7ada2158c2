"""The metrics stream (SUBMITTER_METRICS_FILE shipped to S3, continued across attempts, never read through a link
or past its cap) and the status's per-attempt timeline, through the shared lifecycle with a real child process
and an in-memory store (submitter/runtime/metrics.py, rules.timeline_*)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from runtime_memory import MemoryStore

from submitter import contract
from submitter.contract import Layout, Status
from submitter.runtime import rules
from submitter.runtime.batch import Wrapper
from submitter.runtime.metrics import MetricsShipper, capped
from submitter.runtime.rules import Ending

SUB = "mexp-20260101-000000-abcdef"
RUN = f"{SUB}-0"
L = Layout("mp")

# Appends one line per step to the stream, as a job would, and writes final metrics.
APPEND = """
import json, os
path = os.environ["SUBMITTER_METRICS_FILE"]
attempt = int(os.environ["SUBMITTER_ATTEMPT"])
with open(path, "a") as sink:
    for step in range(2):
        sink.write(json.dumps({"step": attempt * 10 + step, "loss": 1.0 / (attempt + step)}) + "\\n")
"""


def _setup(tmp_path: Path, script: str, status: dict[str, Any] | None = None) -> tuple[MemoryStore, dict[str, str]]:
    store = MemoryStore()
    store.put_json(L.submission_doc(SUB), {
        "submission_id": SUB, "job": "mexp", "command": [sys.executable, "-c", script],
        "volume_mount": str(tmp_path / "data"), "outputs": str(tmp_path / "outputs"), "checkpoints": None,
        "max_runtime": 600, "max_cost": None, "retries": {"on_interruption": 2, "on_failure": 0},
    })
    store.put_json(L.batch_runs(SUB), [contract.run_message(RUN, 0, {})])
    store.put_json(L.status(RUN), status or {"run_id": RUN, "state": "queued"})
    environ = {"SUBMITTER_SUBMISSION_ID": SUB, "SUBMITTER_BUCKET": "wbucket", "SUBMITTER_PREFIX": "mp",
               "AWS_BATCH_JOB_ARRAY_INDEX": "0", "AWS_BATCH_JOB_ATTEMPT": "1", "SUBMITTER_BATCH_ATTEMPTS": "3",
               "AWS_BATCH_JOB_ID": "job-1", "PATH": "/usr/bin:/bin"}
    return store, environ


def _lines(store: MemoryStore) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (store.get_bytes(L.metrics_stream(RUN)) or b"").splitlines()]


def test_the_stream_is_shipped_and_the_attempt_is_in_the_timeline(tmp_path: Path) -> None:
    store, environ = _setup(tmp_path, APPEND)
    assert Wrapper(store, environ, work=tmp_path / "w").main() == 0
    assert _lines(store) == [{"step": 10, "loss": 1.0}, {"step": 11, "loss": 0.5}]
    status = store.json(L.status(RUN))
    [entry] = status["timeline"]
    assert entry["attempt"] == 1 and entry["ending"] == "succeeded" and entry["batch_job_id"] == "job-1"
    assert entry["started_at"] and entry["ended_at"] == status["ended_at"]


def test_a_resumed_run_continues_the_stream_and_the_timeline(tmp_path: Path) -> None:
    earlier = [{"attempt": 1, "instance_id": "i-1", "instance_type": "c5.large", "availability_zone": "us-east-1a",
                "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:05:00Z", "ending": "interrupted",
                "reason": "spot interruption notice"}]
    store, environ = _setup(tmp_path, APPEND, status={
        "run_id": RUN, "state": "interrupted", "attempt": 1, "interruptions": 1, "started_at": "2026-01-01T00:00:00Z",
        "timeline": earlier})
    store.put_bytes(L.metrics_stream(RUN), b'{"step": 1, "loss": 2.0}\n')
    assert Wrapper(store, environ, work=tmp_path / "w").main() == 0
    assert [line["step"] for line in _lines(store)] == [1, 20, 21]  # the earlier attempt's line first
    timeline = store.json(L.status(RUN))["timeline"]
    assert timeline[0] == earlier[0] and [(e["attempt"], e["ending"]) for e in timeline] == [
        (1, "interrupted"), (2, "succeeded")]


def test_a_lost_attempt_is_closed_as_interrupted_at_its_last_heartbeat() -> None:
    prev = Status.from_json({"run_id": "r", "state": "running", "attempt": 1, "started_at": "t0",
                             "heartbeat_at": "t1", "timeline": [{"attempt": 1, "started_at": "t0",
                                                                 "ended_at": None, "ending": None}]})
    status, lost = rules.begin_attempt(prev, {"instance_id": "i-2"}, "t2")
    assert lost
    first, second = rules.timeline(status)
    assert (first["ended_at"], first["ending"], first["reason"]) == ("t1", "interrupted", rules.LOST_REASON)
    assert second == {"attempt": 2, "started_at": "t2", "ended_at": None, "ending": None, "instance_id": "i-2",
                      "instance_type": None, "availability_zone": None, "batch_job_id": None}
    ended = rules.timeline_end(status, Ending(rules.EXITED, 1, "exit code 1"), "t3")
    assert ended[-1]["ending"] == "failed" and ended[-1]["ended_at"] == "t3" and ended[0] == first


def test_the_timeline_is_bounded_and_ignores_what_is_not_an_entry() -> None:
    entries: list[Any] = [{"attempt": n, "ended_at": "t", "ending": "interrupted"} for n in range(80)]
    prev = Status.from_json({"run_id": "r", "state": "interrupted", "attempt": 80, "started_at": "t",
                             "timeline": [*entries, "junk", 7]})
    status, _ = rules.begin_attempt(prev, {}, "now")
    timeline = rules.timeline(status)
    assert len(timeline) == contract.TIMELINE_MAX and timeline[-1]["attempt"] == 81
    assert rules.timeline(Status.from_json({"run_id": "r", "timeline": "nonsense"})) == []


def test_attempt_endings() -> None:
    assert rules.attempt_ending(Ending(rules.SPOT)) == rules.attempt_ending(Ending(rules.HOST)) == "interrupted"
    assert rules.attempt_ending(Ending(rules.CANCEL)) == "cancelled"
    assert rules.attempt_ending(Ending(rules.EXITED, 0)) == "succeeded"
    assert rules.attempt_ending(Ending(rules.LIMIT, None, "max_runtime")) == "failed"


def test_container_env_names_the_metrics_file() -> None:
    sub = {"submission_id": SUB}
    assert rules.container_env(sub, {"run_id": RUN}, 1, "/m/metrics.jsonl")["SUBMITTER_METRICS_FILE"] == \
        "/m/metrics.jsonl"
    assert "SUBMITTER_METRICS_FILE" not in rules.container_env(sub, {"run_id": RUN}, 1)


# ----------------------------------------------------------------------------------------- hostile streams


def _shipper(tmp_path: Path) -> tuple[MemoryStore, MetricsShipper]:
    directory = tmp_path / "metrics"
    directory.mkdir()
    store = MemoryStore()
    return store, MetricsShipper(store, L, RUN, directory)


def test_only_a_changed_stream_is_shipped(tmp_path: Path) -> None:
    store, shipper = _shipper(tmp_path)
    shipper.ship()
    assert L.metrics_stream(RUN) not in store.objects  # no file: no stream, no error
    shipper.path.write_bytes(b'{"step": 0}\n')
    shipper.ship()
    assert store.objects[L.metrics_stream(RUN)] == b'{"step": 0}\n'
    store.objects.clear()
    shipper.ship()
    assert not store.objects  # unchanged: not uploaded again


def test_a_link_or_a_fifo_in_the_streams_place_is_not_read(tmp_path: Path, caplog: Any) -> None:
    store, shipper = _shipper(tmp_path)
    secret = tmp_path / "agent.log"
    secret.write_text("the agent's own log\n")
    shipper.path.symlink_to(secret)
    shipper.ship()
    shipper.ship()
    assert not store.objects
    assert sum("is not shipped" in r.getMessage() for r in caplog.records) == 1  # said once, not every tick
    shipper.path.unlink()
    os.mkfifo(shipper.path)
    shipper.ship()  # O_NONBLOCK: returns at once instead of waiting for a writer
    assert not store.objects


def test_a_stream_over_the_cap_keeps_its_first_whole_lines(tmp_path: Path, caplog: Any) -> None:
    store, shipper = _shipper(tmp_path)
    line = b'{"step": 1, "loss": 0.5}\n'
    with shipper.path.open("wb") as sink:
        sink.write(line * (contract.METRICS_CAP // len(line) + 10))
    shipper.ship()
    kept = store.objects[L.metrics_stream(RUN)]
    assert len(kept) <= contract.METRICS_CAP and kept.endswith(b"\n") and kept.count(b"\n") == len(kept) // len(line)
    assert any("only its first 4 MiB" in r.getMessage() for r in caplog.records)
    store.objects.clear()
    with shipper.path.open("ab") as sink:
        sink.write(line)
    shipper.ship()
    assert not store.objects  # what is kept cannot change any more
    assert capped(b"ab\ncd\nef", 7) == b"ab\ncd\n" and capped(b"abc", 7) == b"abc"
