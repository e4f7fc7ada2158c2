"""The Batch side of the runtime: one attempt of a run, through the shared lifecycle, against an in-memory
store and a real child process (submitter/runtime/batch.py)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from runtime_memory import MemoryStore

from submitter import contract
from submitter.contract import Layout
from submitter.runtime.batch import Wrapper, final_attempt, pick_run, settle

SUB = "wexp-20260101-000000-abcdef"
L = Layout("wp")
RETRY = contract.EXIT_RETRY


def _setup(tmp_path: Path, script: str, retries: dict[str, int] | None = None,
           status: dict[str, Any] | None = None) -> tuple[Any, dict[str, str]]:
    store = MemoryStore()
    outputs, checkpoints, data = tmp_path / "outputs", tmp_path / "checkpoints", tmp_path / "data"
    store.put_json(L.submission_doc(SUB), {
        "submission_id": SUB, "job": "wexp", "command": [sys.executable, "-c", script],
        "volume_mount": str(data), "outputs": str(outputs), "checkpoints": str(checkpoints),
        "max_runtime": 600, "max_cost": None, "retries": retries or {"on_interruption": 2, "on_failure": 0},
        "inputs": [{"uri": "s3://wbucket/wp/inputs/abc/", "target": f"{data}/train", "kind": "dir"}],
        "secrets": {"names": ["W_TOKEN"], "ssm_prefix": contract.secrets_prefix(SUB)},
    })
    store.put_json(L.batch_runs(SUB), [contract.run_message(f"{SUB}-{i}", i, {"LR": lr})
                                       for i, lr in enumerate(["0.1", "0.01"])])
    store.put_bytes(L.input("abc") + "a.csv", b"1,2\n")
    store.put_bytes(L.checkpoints(f"{SUB}-1") + "step.txt", b"7")
    store.put_json(L.status(f"{SUB}-1"), status or {
        "run_id": f"{SUB}-1", "state": "queued", "attempt": 0, "interruptions": 0, "failures": 0})
    environ = {"SUBMITTER_SUBMISSION_ID": SUB, "SUBMITTER_BUCKET": "wbucket", "SUBMITTER_PREFIX": "wp",
               "AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ATTEMPT": "1", "SUBMITTER_BATCH_ATTEMPTS": "3",
               "AWS_BATCH_JOB_ID": "job-1:1", "PATH": "/usr/bin:/bin"}
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
    status = store.json(L.status(run))
    assert code == 0, status
    assert status["state"] == "succeeded" and status["exit_code"] == 0 and status["attempt"] == 1
    assert status["batch_job_id"] == "job-1:1" and status["started_at"] and status["ended_at"]
    log = store.get_bytes(L.container_log(run)) or b""
    assert f"lr 0.01 run {run} attempt 1".encode() in log
    assert b"token value-of-W_TOKEN resume 7" in log and b"input 1,2" in log and b"leaked []" in log
    chunks = store.keys(L.chunks(run))
    assert chunks and b"".join(store.objects[k] for k in chunks) == log
    assert store.json(L.outputs(run) + "metrics.json") == {"acc": 0.9}
    assert store.json(L.checkpoints(run) + "step.txt") == 7
    # restored as an older version left it (no manifest), then synced at the end with a manifest
    manifest = store.json(L.checkpoint_manifest(run, 1))
    assert [(f["path"], f["size"]) for f in manifest["files"]] == [("step.txt", 1)] and manifest["attempt"] == 1
    assert status["checkpoint_at"] == manifest["written_at"] and "older version" in status["checkpoint_note"]
    assert "checkpoint_warning" not in status
    assert b"command exited with 0" in (store.get_bytes(L.agent_log(run)) or b"")
    assert not store.exists(L.status(f"{SUB}-0"))  # the other child's run is not touched


def test_a_failure_with_a_retry_left_asks_batch_for_another_attempt(tmp_path: Path) -> None:
    store, environ = _setup(tmp_path, "import sys; print('boom'); sys.exit(3)",
                            retries={"on_interruption": 2, "on_failure": 1})
    assert Wrapper(store, environ, work=tmp_path / "w1").main() == RETRY
    status = store.json(L.status(f"{SUB}-1"))
    assert (status["state"], status["failures"], status["exit_code"]) == ("queued", 1, 3)
    # The second attempt fails again: no on_failure left, so the job ends (exit 1) and the run is failed.
    environ["AWS_BATCH_JOB_ATTEMPT"] = "2"
    assert Wrapper(store, environ, work=tmp_path / "w2").main() == 1
    status = store.json(L.status(f"{SUB}-1"))
    assert (status["state"], status["attempt"], status["exit_code"]) == ("failed", 2, 3)
    assert (store.get_bytes(L.container_log(f"{SUB}-1")) or b"").count(b"boom") == 2


def test_a_lost_attempt_counts_as_an_interruption(tmp_path: Path) -> None:
    # The previous attempt's host was reclaimed while it ran: Batch retried on 'Host EC2*'.
    lost = {"run_id": f"{SUB}-1", "state": "running", "attempt": 1, "interruptions": 2, "failures": 0,
            "started_at": "2026-01-01T00:00:00Z"}
    store, environ = _setup(tmp_path, "print('never')", status=lost)
    environ["AWS_BATCH_JOB_ATTEMPT"] = "2"
    assert Wrapper(store, environ, work=tmp_path / "w").main() == 1
    status = store.json(L.status(f"{SUB}-1"))
    assert status["state"] == "failed" and status["interruptions"] == 3
    assert "retries.on_interruption is 2" in status["reason"]


def test_cancel_before_start_and_an_already_finished_run(tmp_path: Path) -> None:
    store, environ = _setup(tmp_path, "print('never')")
    store.put_bytes(L.submission_cancel(SUB), b"{}")
    assert Wrapper(store, environ, work=tmp_path / "w").main() == 1
    assert store.json(L.status(f"{SUB}-1"))["state"] == "cancelled"
    assert Wrapper(store, environ, work=tmp_path / "w2").main() == 1  # terminal already: nothing runs again
    assert store.get_bytes(L.container_log(f"{SUB}-1")) is None


def test_sigterm_while_running_is_an_interruption_unless_cancelled(tmp_path: Path) -> None:
    script = "import time\nprint('up', flush=True)\ntime.sleep(60)"
    store, environ = _setup(tmp_path, script)
    wrapper = Wrapper(store, environ, work=tmp_path / "w")
    wrapper.host.tick = 0.5
    wrapper.host.stopping = True  # Batch's SIGTERM arrives while the command runs
    assert wrapper.main() == RETRY
    status = store.json(L.status(f"{SUB}-1"))
    assert status["state"] == "interrupted" and status["interruptions"] == 1
    assert "AWS Batch stopped the container" in status["reason"]
    assert b"up" in (store.get_bytes(L.container_log(f"{SUB}-1")) or b"")
    # The same SIGTERM once a cancel marker exists: `submitter cancel` terminated the job.
    store, environ = _setup(tmp_path / "again", script)
    wrapper = Wrapper(store, environ, work=tmp_path / "w2")
    wrapper.host.tick = 0.5

    def cancel_once_running() -> None:
        while (store.read_json(L.status(f"{SUB}-1")) or {}).get("state") != "running":
            time.sleep(0.05)
        store.put_bytes(L.run_cancel(f"{SUB}-1"), b"")
        wrapper.host.stopping = True

    threading.Thread(target=cancel_once_running, daemon=True).start()
    assert wrapper.main() == 1
    assert store.json(L.status(f"{SUB}-1"))["state"] == "cancelled"


@pytest.mark.parametrize(("state", "action", "last", "expected"), [
    ("succeeded", "delete", False, ("succeeded", 0)),
    ("failed", "delete", False, ("failed", 1)),
    ("interrupted", "release", False, ("interrupted", RETRY)),
    ("interrupted", "release", True, ("failed", 1)),
    ("queued", "release", True, ("failed", 1)),
])
def test_settle_maps_the_lifecycle_decision_to_batch(state: str, action: str, last: bool,
                                                       expected: tuple[str, int]) -> None:
    got_state, fields, code = settle(state, {"reason": "r"}, action, last)
    assert (got_state, code) == expected
    if last and action == "release":
        assert fields["reason"] == "r; no AWS Batch attempt left"


def test_pick_run_and_final_attempt() -> None:
    sub = "exp-20261130-120000-abcdef"
    runs = [{"run_id": f"{sub}-0"}, {"run_id": f"{sub}-1"}]
    env = {"SUBMITTER_SUBMISSION_ID": sub}
    assert pick_run(runs, env)["run_id"] == f"{sub}-0"
    assert pick_run(runs, {**env, "AWS_BATCH_JOB_ARRAY_INDEX": "1"})["run_id"] == f"{sub}-1"
    with pytest.raises(ValueError, match="outside"):
        pick_run(runs, {**env, "AWS_BATCH_JOB_ARRAY_INDEX": "2"})
    # The batch record is read back from S3: a run id that is not this submission's never becomes a path.
    for forged in ("../../x", "other-20261130-120000-abcdef-0", f"{sub}-0/../../x", f"{sub}x"):
        with pytest.raises(ValueError, match="not a run of"):
            pick_run([{"run_id": forged}], env)
    assert final_attempt({"AWS_BATCH_JOB_ATTEMPT": "4", "SUBMITTER_BATCH_ATTEMPTS": "4"})
    assert not final_attempt({"AWS_BATCH_JOB_ATTEMPT": "1", "SUBMITTER_BATCH_ATTEMPTS": "4"})
