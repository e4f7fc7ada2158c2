"""The Batch in-container wrapper: one attempt of a run against an in-memory S3 and a real child process."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from submitter.boot import wrapper
from submitter.boot.wrapper import RETRY_EXIT, Wrapper, final_attempt, pick_run, settle

SUB = "wexp-20260101-000000-abcdef"


class MemoryStore(wrapper.Store):
    """The wrapper's S3 view, in a dict; downloads and uploads are plain file copies."""

    def __init__(self) -> None:  # no boto3 client
        self.bucket, self.prefix, self.region = "wbucket", "wp", "us-east-1"
        self.objects: dict[str, bytes] = {}

    def get_bytes(self, rel: str) -> bytes | None:
        return self.objects.get(self.key(rel))

    def put_bytes(self, rel: str, data: bytes, content_type: str = "text/plain") -> None:
        self.objects[self.key(rel)] = data

    def exists(self, rel: str) -> bool:
        return self.key(rel) in self.objects

    def keys(self, rel: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(self.key(rel)))

    def download(self, uri: str, dest: Path, kind: str) -> int:
        key = uri.split("/", 3)[3]
        found = {k: v for k, v in self.objects.items() if k.startswith(key)}
        for k, v in found.items():
            target = dest if kind == "file" else dest / k[len(key):].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(v)
        return len(found)

    def upload_tree(self, local: Path, rel: str, seen: dict[str, tuple[int, int]]) -> int:
        files = [p for p in local.rglob("*") if p.is_file()] if local.is_dir() else []
        for path in files:
            self.objects[self.key(f"{rel}/{path.relative_to(local).as_posix()}")] = path.read_bytes()
        return len(files)

    def secrets(self, names: list[str], ssm_prefix: str) -> dict[str, str]:
        return {n: f"value-of-{n}" for n in names}

    def spot_price(self, instance_type: str, zone: str) -> float:
        return 0.5

    def json(self, rel: str) -> Any:
        return json.loads(self.objects[self.key(rel)])


def _setup(tmp_path: Path, script: str, retries: dict[str, int] | None = None,
           status: dict[str, Any] | None = None) -> tuple[MemoryStore, dict[str, str]]:
    store = MemoryStore()
    outputs, checkpoints, data = tmp_path / "outputs", tmp_path / "checkpoints", tmp_path / "data"
    store.put_bytes(f"submissions/{SUB}/submission.json", json.dumps({
        "submission_id": SUB, "job": "wexp", "command": [sys.executable, "-c", script],
        "volume_mount": str(data), "outputs": str(outputs), "checkpoints": str(checkpoints),
        "max_runtime": 600, "max_cost": None, "retries": retries or {"on_interruption": 2, "on_failure": 0},
        "inputs": [{"uri": "s3://wbucket/wp/inputs/abc/", "target": f"{data}/train", "kind": "dir"}],
        "secrets": {"names": ["W_TOKEN"], "ssm_prefix": f"/submitter/{SUB}/"},
    }).encode())
    runs = [{"run_id": f"{SUB}-{i}", "index": i, "env": {"LR": lr}} for i, lr in enumerate(["0.1", "0.01"])]
    store.put_bytes(f"submissions/{SUB}/runs.json", json.dumps(runs).encode())
    store.put_bytes("inputs/abc/a.csv", b"1,2\n")
    store.put_bytes(f"runs/{SUB}-1/checkpoints/step.txt", b"7")
    store.put_bytes(f"runs/{SUB}-1/status.json", json.dumps(status or {
        "run_id": f"{SUB}-1", "state": "queued", "attempt": 0, "interruptions": 0, "failures": 0}).encode())
    environ = {"SUBMITTER_SUBMISSION_ID": SUB, "SUBMITTER_BUCKET": "wbucket", "AWS_BATCH_JOB_ARRAY_INDEX": "1",
               "AWS_BATCH_JOB_ATTEMPT": "1", "SUBMITTER_BATCH_ATTEMPTS": "3", "AWS_BATCH_JOB_ID": "job-1:1",
               "PATH": "/usr/bin:/bin"}
    return store, environ


SCRIPT = """
import os, pathlib
print("lr", os.environ["LR"], "run", os.environ["SUBMITTER_RUN_ID"], "attempt", os.environ["SUBMITTER_ATTEMPT"])
ckpt = pathlib.Path(os.environ["SUBMITTER_CHECKPOINT_DIR"], "step.txt")
print("token", os.environ["W_TOKEN"], "resume", ckpt.read_text())
print("input", pathlib.Path(os.environ["SUBMITTER_DATA_DIR"], "train", "a.csv").read_text().strip())
print("leaked", [k for k in os.environ if k in ("SUBMITTER_BUCKET", "SUBMITTER_BATCH_ATTEMPTS")])
pathlib.Path(os.environ["SUBMITTER_OUTPUT_DIR"], "metrics.json").write_text('{"acc": 0.9}')
"""


def test_an_array_child_runs_its_run_and_leaves_the_pool_layout(tmp_path: Path) -> None:
    store, environ = _setup(tmp_path, SCRIPT)
    code = Wrapper(store, environ, work=tmp_path / "work").main()
    run = f"{SUB}-1"
    status = store.json(f"runs/{run}/status.json")
    assert code == 0, status
    assert status["state"] == "succeeded" and status["exit_code"] == 0 and status["attempt"] == 1
    assert status["batch_job_id"] == "job-1:1" and status["started_at"] and status["ended_at"]
    log = store.get_bytes(f"runs/{run}/logs/container.log") or b""
    assert f"lr 0.01 run {run} attempt 1".encode() in log
    assert b"token value-of-W_TOKEN resume 7" in log and b"input 1,2" in log and b"leaked []" in log
    chunks = store.keys(f"runs/{run}/logs/chunks/")
    assert chunks and b"".join(store.objects[k] for k in chunks) == log
    assert store.json(f"runs/{run}/outputs/metrics.json") == {"acc": 0.9}
    assert store.json(f"runs/{run}/checkpoints/step.txt") == 7
    assert b"command exited with 0" in (store.get_bytes(f"runs/{run}/logs/agent.log") or b"")
    assert not store.exists(f"runs/{SUB}-0/status.json")  # the other child's run is not touched


def test_a_failure_with_a_retry_left_asks_batch_for_another_attempt(tmp_path: Path) -> None:
    store, environ = _setup(tmp_path, "import sys; print('boom'); sys.exit(3)",
                            retries={"on_interruption": 2, "on_failure": 1})
    assert Wrapper(store, environ, work=tmp_path / "w1").main() == RETRY_EXIT
    status = store.json(f"runs/{SUB}-1/status.json")
    assert (status["state"], status["failures"], status["exit_code"]) == ("queued", 1, 3)
    # The second attempt fails again: no on_failure left, so the job ends (exit 1) and the run is failed.
    environ["AWS_BATCH_JOB_ATTEMPT"] = "2"
    assert Wrapper(store, environ, work=tmp_path / "w2").main() == 1
    status = store.json(f"runs/{SUB}-1/status.json")
    assert (status["state"], status["attempt"], status["exit_code"]) == ("failed", 2, 3)
    assert (store.get_bytes(f"runs/{SUB}-1/logs/container.log") or b"").count(b"boom") == 2


def test_a_lost_attempt_counts_as_an_interruption(tmp_path: Path) -> None:
    # The previous attempt's host was reclaimed while it ran: Batch retried on 'Host EC2*'.
    lost = {"run_id": f"{SUB}-1", "state": "running", "attempt": 1, "interruptions": 2, "failures": 0,
            "started_at": "2026-01-01T00:00:00Z"}
    store, environ = _setup(tmp_path, "print('never')", status=lost)
    environ["AWS_BATCH_JOB_ATTEMPT"] = "2"
    assert Wrapper(store, environ, work=tmp_path / "w").main() == 1
    status = store.json(f"runs/{SUB}-1/status.json")
    assert status["state"] == "failed" and status["interruptions"] == 3
    assert "retries.on_interruption is 2" in status["reason"]


def test_cancel_before_start_and_an_already_finished_run(tmp_path: Path) -> None:
    store, environ = _setup(tmp_path, "print('never')")
    store.put_bytes(f"submissions/{SUB}/cancel", b"{}")
    assert Wrapper(store, environ, work=tmp_path / "w").main() == 1
    assert store.json(f"runs/{SUB}-1/status.json")["state"] == "cancelled"
    assert Wrapper(store, environ, work=tmp_path / "w2").main() == 1  # terminal already: nothing runs again
    assert store.get_bytes(f"runs/{SUB}-1/logs/container.log") is None


def test_sigterm_while_running_is_an_interruption_unless_cancelled(tmp_path: Path) -> None:
    script = "import time\nprint('up', flush=True)\ntime.sleep(60)"
    store, environ = _setup(tmp_path, script)
    w = Wrapper(store, environ, work=tmp_path / "w")
    original = w.check

    def check(count: int):  # Batch's SIGTERM arrives during the first tick
        w.sigterm = True
        return original(count)

    w.check = check  # type: ignore[method-assign]
    assert w.attempt() == RETRY_EXIT
    status = store.json(f"runs/{SUB}-1/status.json")
    assert status["state"] == "interrupted" and status["interruptions"] == 1
    assert b"up" in (store.get_bytes(f"runs/{SUB}-1/logs/container.log") or b"")


@pytest.mark.parametrize(("state", "action", "last", "expected"), [
    ("succeeded", "delete", False, ("succeeded", 0)),
    ("failed", "delete", False, ("failed", 1)),
    ("interrupted", "release", False, ("interrupted", RETRY_EXIT)),
    ("interrupted", "release", True, ("failed", 1)),
    ("queued", "release", True, ("failed", 1)),
])
def test_settle_maps_the_agent_decision_to_batch(state: str, action: str, last: bool,
                                                   expected: tuple[str, int]) -> None:
    got_state, fields, code = settle(state, {"reason": "r"}, action, last)
    assert (got_state, code) == expected
    if last and action == "release":
        assert fields["reason"] == "r; no AWS Batch attempt left"


def test_pick_run_and_final_attempt() -> None:
    runs = [{"run_id": "a"}, {"run_id": "b"}]
    assert pick_run(runs, {})["run_id"] == "a"
    assert pick_run(runs, {"AWS_BATCH_JOB_ARRAY_INDEX": "1"})["run_id"] == "b"
    with pytest.raises(ValueError, match="outside"):
        pick_run(runs, {"AWS_BATCH_JOB_ARRAY_INDEX": "2"})
    assert final_attempt({"AWS_BATCH_JOB_ATTEMPT": "4", "SUBMITTER_BATCH_ATTEMPTS": "4"})
    assert not final_attempt({"AWS_BATCH_JOB_ATTEMPT": "1", "SUBMITTER_BATCH_ATTEMPTS": "4"})
