"""The runtime's pure rules: status transitions and counters, endings and how they settle, limits, cost, log
chunking, input paths and the container's environment (submitter/runtime/rules.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from submitter import contract
from submitter.contract import Status
from submitter.runtime import rules
from submitter.runtime.rules import DELETE, RELEASE, Ending

SUB: dict[str, Any] = {
    "submission_id": "exp1-20261126-070000-abc123", "job": "exp1", "image": "reg/train@sha256:" + "a" * 64,
    "command": ["python", "train.py"], "volume_mount": "/data", "outputs": "/outputs",
    "checkpoints": "/checkpoints", "gpus": "auto", "max_runtime": 1800, "max_cost": 1.0,
    "retries": {"on_interruption": 3, "on_failure": 1}, "grace_seconds": 90,
}


# ----------------------------------------------------------------------------------------- status documents


def test_first_attempt_starts_from_the_queued_document() -> None:
    queued = Status.from_json({"run_id": "r", "state": "queued", "attempt": 1, "interruptions": 0, "failures": 0,
                               "created_at": "2026-11-26T07:00:00Z"})
    status, lost = rules.begin_attempt(queued, {"instance_id": "i-1", "price": 0.03}, "2026-11-26T07:01:00Z")
    assert not lost
    assert status.state == "starting" and status.attempt == 1 and status.interruptions == 0
    assert status.instance_id == "i-1" and status.created_at == "2026-11-26T07:00:00Z"
    assert queued.state == "queued"  # the input is not changed


def test_a_resumed_attempt_keeps_counters_and_clears_the_last_end() -> None:
    interrupted = Status.from_json({
        "run_id": "r", "state": "interrupted", "attempt": 2, "interruptions": 2, "failures": 0, "cost": 0.5,
        "started_at": "x", "ended_at": "y", "exit_code": 143, "reason": "spot", "instance_id": "i-1"})
    status, lost = rules.begin_attempt(interrupted, {"instance_id": "i-2", "batch_job_id": "j"}, "now")
    assert not lost
    assert status.attempt == 3 and status.interruptions == 2 and status.cost == 0.5
    doc = status.to_json()
    assert "ended_at" not in doc and "exit_code" not in doc and "reason" not in doc
    assert doc["instance_id"] == "i-2" and doc["batch_job_id"] == "j"


@pytest.mark.parametrize("state", ["starting", "running"])
def test_an_attempt_that_never_reported_its_end_counts_as_an_interruption(state: str) -> None:
    prev = Status.from_json({"run_id": "r", "state": state, "attempt": 1, "interruptions": 0, "started_at": "x"})
    status, lost = rules.begin_attempt(prev, {}, "now")
    assert lost and status.interruptions == 1 and status.attempt == 2


def test_evolve_removes_fields_given_as_none() -> None:
    status = Status.from_json({"run_id": "r", "state": "running", "reason": "old", "cost": 1})
    assert status.evolve("succeeded", reason=None, cost=2).to_json() == {
        "run_id": "r", "state": "succeeded", "cost": 2, "attempt": 0, "interruptions": 0, "failures": 0,
        "submission_id": "", "job": ""}


# ----------------------------------------------------------------------------------------- endings

RETRIES = {"on_interruption": 2, "on_failure": 1}


def _status(**fields: Any) -> Status:
    return Status.from_json({"run_id": "r", "state": "running", **fields})


def test_exit_zero_succeeds_and_deletes() -> None:
    state, fields, action = rules.decide_end(Ending("exited", 0), _status(failures=0), RETRIES)
    assert (state, action) == (contract.SUCCEEDED, DELETE) and fields["exit_code"] == 0


def test_nonzero_exit_is_retried_while_failures_are_below_on_failure() -> None:
    state, fields, action = rules.decide_end(Ending("exited", 3), _status(failures=0), RETRIES)
    assert (state, action) == (contract.QUEUED, RELEASE) and fields["failures"] == 1
    state, fields, action = rules.decide_end(Ending("exited", 3), _status(failures=1), RETRIES)
    assert (state, action) == (contract.FAILED, DELETE)
    assert fields == {"reason": "exit code 3", "exit_code": 3}


def test_spot_notice_requeues_until_interruptions_exceed_the_retries() -> None:
    state, fields, action = rules.decide_end(Ending("spot", 143, "notice"), _status(interruptions=1), RETRIES)
    assert (state, action, fields["interruptions"]) == (contract.INTERRUPTED, RELEASE, 2)
    state, fields, action = rules.decide_end(Ending("spot", 143, "notice"), _status(interruptions=2), RETRIES)
    assert (state, action) == (contract.FAILED, DELETE)
    assert fields["reason"] == "interrupted 3 times; retries.on_interruption is 2"


def test_cancel_and_limits_are_final() -> None:
    assert rules.decide_end(Ending("cancel", 143, "cancelled"), _status(), RETRIES)[::2] == ("cancelled", DELETE)
    state, fields, action = rules.decide_end(Ending("limit", 143, "max_runtime 30m reached"), _status(), RETRIES)
    assert (state, action, fields["reason"]) == (contract.FAILED, DELETE, "max_runtime 30m reached")
    state, _, action = rules.decide_end(Ending("setup", None, "image pull refused: x"), _status(), RETRIES)
    assert (state, action) == (contract.FAILED, DELETE)


def test_interruption_reason() -> None:
    assert rules.interruption_reason(3, 3) is None
    assert rules.interruption_reason(4, 3) == "interrupted 4 times; retries.on_interruption is 3"


# ----------------------------------------------------------------------------------------- limits and cost


@pytest.mark.parametrize(("seconds", "text"), [(1800, "30m"), (5400, "1h30m"), (45, "45s"), (3600, "1h"),
                                               (90, "1m30s"), (0, "0s")])
def test_human_duration(seconds: int, text: str) -> None:
    assert rules.human_duration(seconds) == text


def test_limit_reason() -> None:
    assert rules.limit_reason(10, 0.1, 1800, 1.0) is None
    assert rules.limit_reason(1800, 0.1, 1800, 1.0) == "max_runtime 30m reached"
    assert rules.limit_reason(10, 1.0, 1800, 1.0) == "max_cost $1.00 reached"
    assert rules.limit_reason(10**6, 10**6, None, None) is None


def test_cost_and_deadman() -> None:
    assert rules.cost_of(0.36, 1800) == pytest.approx(0.18)
    assert contract.deadman_minutes(1800, 45) == 45  # (1800 + 900) / 60
    assert contract.deadman_minutes(1801, 45) == 46
    assert contract.deadman_minutes(None, 60) == 60


def test_stop_timeout_is_cut_short_by_a_spot_notice() -> None:
    now = datetime(2026, 11, 26, 7, 0, tzinfo=timezone.utc)
    assert rules.stop_timeout(90, None, now) == 90
    assert rules.stop_timeout(90, now + timedelta(seconds=120), now) == 90
    assert rules.stop_timeout(90, now + timedelta(seconds=60), now) == 60 - rules.NOTICE_RESERVE
    assert rules.stop_timeout(90, now, now) == 5
    assert contract.parse_iso("2026-11-26T07:02:00Z") == now + timedelta(minutes=2)
    assert contract.parse_iso("soon") is None


# ----------------------------------------------------------------------------------------- logs and answers


def test_chunk_numbering_continues_after_earlier_attempts() -> None:
    assert contract.next_chunk_number([]) == 0
    keys = ["p/runs/r/logs/chunks/000000.log", "p/runs/r/logs/chunks/000011.log", "p/runs/r/logs/chunks/x.txt"]
    assert contract.next_chunk_number(keys) == 12
    assert contract.chunk_name(12) == "000012.log"


def test_split_chunk_ships_whole_lines_until_the_end() -> None:
    assert rules.split_chunk(b"a\nb\npart", final=False) == (b"a\nb\n", b"part")
    assert rules.split_chunk(b"part", final=False) == (b"", b"part")
    assert rules.split_chunk(b"a\npart", final=True) == (b"a\npart", b"")
    huge = b"x" * rules.CHUNK_HOLD
    assert rules.split_chunk(huge, final=False) == (huge, b"")


def test_spot_price_answer() -> None:
    answer = {"SpotPriceHistory": [
        {"SpotPrice": "0.031", "Timestamp": "2026-11-26T06:00:00+00:00"},
        {"SpotPrice": "0.042", "Timestamp": "2026-11-26T07:00:00+00:00"},
    ]}
    assert rules.parse_spot_price(answer) == 0.042
    assert rules.parse_spot_price({}) is None
    assert rules.parse_spot_price({"SpotPriceHistory": [{"SpotPrice": "n/a"}]}) is None


# ----------------------------------------------------------------------------------------- container


def test_data_path_maps_targets_below_the_data_dir(tmp_path: Path) -> None:
    assert rules.data_path("/data/train", "/data", tmp_path) == tmp_path / "train"
    assert rules.data_path("/data/", "/data", tmp_path) == tmp_path
    with pytest.raises(ValueError, match="not under volume_mount"):
        rules.data_path("/etc/passwd", "/data", tmp_path)
    with pytest.raises(ValueError, match="not under"):
        rules.data_path("/database", "/data", tmp_path)
    with pytest.raises(ValueError, match="leaves"):
        rules.data_path("/data/../etc", "/data", tmp_path)


def test_container_env_carries_the_contract_variables() -> None:
    env = rules.container_env(SUB, {"run_id": "r-0", "env": {"LR": 0.1}}, 2)
    assert env == {"LR": "0.1", "SUBMITTER_RUN_ID": "r-0", "SUBMITTER_SUBMISSION_ID": SUB["submission_id"],
                   "SUBMITTER_ATTEMPT": "2", "SUBMITTER_DATA_DIR": "/data", "SUBMITTER_OUTPUT_DIR": "/outputs",
                   "SUBMITTER_CHECKPOINT_DIR": "/checkpoints"}


def test_container_command() -> None:
    assert rules.container_command(None) == [] and rules.container_command([]) == []
    assert rules.container_command("echo hi") == ["/bin/sh", "-c", "echo hi"]
    assert rules.container_command(["python", 1]) == ["python", "1"]
