"""The pure rules of a run attempt, shared by the pool agent and the Batch wrapper: counters, endings and
what they settle to, limits, cost, log chunking, input paths and the container's environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from submitter import contract
from submitter.contract import Status

CHUNK_HOLD = 256 * 1024  # a partial last line is held back from a log chunk until it is this long
NOTICE_RESERVE = 25  # seconds of a spot notice kept for the final uploads when it shortens the grace

# How the run's work item is settled once its status is written: done for good, or to be run again.
DELETE, RELEASE = "delete", "release"


def human_duration(seconds: float) -> str:
    """1800 -> '30m', 5400 -> '1h30m', 45 -> '45s': the way limits are written in a job spec."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def limit_reason(elapsed: float, cost: float, max_runtime: float | None, max_cost: float | None) -> str | None:
    """Why the run must be stopped now, or None while it is within its limits."""
    if max_runtime and elapsed >= max_runtime:
        return f"max_runtime {human_duration(max_runtime)} reached"
    if max_cost is not None and cost >= max_cost:
        return f"max_cost ${max_cost:.2f} reached"
    return None


def cost_of(price: float, seconds: float) -> float:
    return round(price * seconds / 3600.0, 6)


def stop_timeout(grace: int, action_time: datetime | None, now: datetime) -> int:
    """SIGTERM->SIGKILL grace, cut short so the uploads still fit before a spot reclaim."""
    if action_time is None:
        return grace
    left = (action_time - now).total_seconds() - NOTICE_RESERVE
    return max(5, min(grace, int(left)))


def begin_attempt(prev: Status, identity: dict[str, Any], now: str) -> tuple[Status, bool]:
    """The `starting` status of a new attempt of a run, and whether the previous attempt was lost.

    Counters survive from `prev`. An attempt that was `starting`/`running` and never reported its end lost its
    worker without a notice (a reclaim, the dead-man switch, a host crash): it counts as an interruption,
    which also bounds a run that keeps killing its hosts.
    """
    lost = prev.state in contract.ACTIVE
    attempt = prev.attempt + 1 if prev.started_at else 1
    status = prev.evolve(
        contract.STARTING, attempt=attempt, interruptions=prev.interruptions + (1 if lost else 0),
        cost=float(prev.cost or 0.0), reason=None, exit_code=None, ended_at=None, heartbeat_at=now, **identity,
    )
    status = status.evolve(status.state, timeline=timeline_begin(prev, status, lost, identity, now))
    return status, lost


def interruption_reason(interruptions: int, on_interruption: int) -> str | None:
    """None while another resume is allowed, else why the run gives up."""
    if interruptions <= on_interruption:
        return None
    return f"interrupted {interruptions} times; retries.on_interruption is {on_interruption}"


# Ending kinds: how the run's process stopped.
EXITED, SPOT, HOST, CANCEL, LIMIT, SETUP, ERROR = "exited", "spot", "host", "cancel", "limit", "setup", "error"


@dataclass(frozen=True)
class Ending:
    """How a run's process stopped: `kind` is one of the kinds above."""

    kind: str
    exit_code: int | None = None
    reason: str = ""


def decide_end(ending: Ending, status: Status, retries: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(state, fields to set, DELETE or RELEASE) for the run's final status and its work item."""
    if ending.kind in (SPOT, HOST):
        interruptions = status.interruptions + 1
        given_up = interruption_reason(interruptions, int(retries.get("on_interruption", 0)))
        if given_up:
            return contract.FAILED, {"interruptions": interruptions, "reason": given_up}, DELETE
        return contract.INTERRUPTED, {"interruptions": interruptions, "reason": ending.reason}, RELEASE
    if ending.kind == CANCEL:
        return contract.CANCELLED, {"reason": ending.reason or "cancelled"}, DELETE
    if ending.kind == EXITED and ending.exit_code == 0:
        return contract.SUCCEEDED, {"exit_code": 0, "reason": None}, DELETE
    reason = ending.reason or f"exit code {ending.exit_code}"
    fields: dict[str, Any] = {"reason": reason, "exit_code": ending.exit_code}
    if ending.kind in (EXITED, ERROR) and status.failures < int(retries.get("on_failure", 0)):
        fields["failures"] = status.failures + 1
        return contract.QUEUED, fields, RELEASE
    return contract.FAILED, fields, DELETE


# ----------------------------------------------------------------------------- the attempts' timeline
# status.json's `timeline`: one entry per attempt (where it ran, when, how it ended), the latest
# contract.TIMELINE_MAX of them; `compare` and `report` read it.

LOST_REASON = "the worker was lost without a report (a reclaim, the dead-man switch or a host crash)"


def timeline(status: Status) -> list[dict[str, Any]]:
    entries = status.extra.get("timeline")
    return [dict(e) for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _close(entries: list[dict[str, Any]], ended_at: str, ending: str, reason: str | None) -> None:
    """End the open entry (the latest, when it has no end yet)."""
    if entries and entries[-1].get("ended_at") is None:
        entries[-1].update({"ended_at": ended_at, "ending": ending, "reason": reason or None})


def timeline_begin(prev: Status, status: Status, lost: bool, identity: dict[str, Any],
                   now: str) -> list[dict[str, Any]]:
    """The timeline with the new attempt opened; a lost previous attempt is closed as interrupted at its last
    heartbeat."""
    entries = timeline(prev)
    if lost:
        _close(entries, prev.heartbeat_at or now, contract.INTERRUPTED, LOST_REASON)
    entry: dict[str, Any] = {"attempt": status.attempt, "started_at": now, "ended_at": None, "ending": None}
    for name in ("instance_id", "instance_type", "availability_zone", "batch_job_id"):
        entry[name] = identity.get(name)
    entries.append(entry)
    return entries[-contract.TIMELINE_MAX:]


def attempt_ending(ending: Ending) -> str:
    """How one attempt ended, in the run-state words: a retried failure is still a failed attempt."""
    if ending.kind in (SPOT, HOST):
        return contract.INTERRUPTED
    if ending.kind == CANCEL:
        return contract.CANCELLED
    return contract.SUCCEEDED if ending.kind == EXITED and ending.exit_code == 0 else contract.FAILED


def timeline_end(status: Status, ending: Ending, now: str) -> list[dict[str, Any]]:
    entries = timeline(status)
    _close(entries, now, attempt_ending(ending), ending.reason or None)
    return entries


def data_path(target: str, volume_mount: str, data_dir: Path) -> Path:
    """Where on the host an input whose container path is `target` goes (below the data volume's dir)."""
    mount = "/" + volume_mount.strip("/")
    clean = "/" + target.strip("/")
    if clean != mount and not clean.startswith(mount.rstrip("/") + "/"):
        raise ValueError(f"input target {target} is not under volume_mount {volume_mount}")
    rel = clean[len(mount):].strip("/")
    if ".." in rel.split("/"):
        raise ValueError(f"input target {target} leaves volume_mount {volume_mount}")
    return data_dir / rel if rel else data_dir


def split_chunk(pending: bytes, final: bool) -> tuple[bytes, bytes]:
    """(what to ship now, what to hold back): whole lines, unless it is the last chunk or a line is huge."""
    if final or len(pending) >= CHUNK_HOLD:
        return pending, b""
    cut = pending.rfind(b"\n") + 1
    return pending[:cut], pending[cut:]


def parse_spot_price(answer: dict[str, Any]) -> float | None:
    history = answer.get("SpotPriceHistory") or []
    if not history:
        return None
    latest = max(history, key=lambda h: str(h.get("Timestamp", "")))
    try:
        return float(latest["SpotPrice"])
    except (KeyError, TypeError, ValueError):
        return None


def container_command(command: Any) -> list[str]:
    """The spec's command: exec form as is, a single string through the image's shell, none = image CMD."""
    if command is None or command == []:
        return []
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    return [str(part) for part in command]


def container_env(sub: dict[str, Any], message: dict[str, Any], attempt: int,
                  metrics_file: str | None = None) -> dict[str, str]:
    """The run's env plus the contract's SUBMITTER_* variables."""
    env = {str(k): str(v) for k, v in (message.get("env") or {}).items()}
    env.update({
        "SUBMITTER_RUN_ID": str(message["run_id"]),
        "SUBMITTER_SUBMISSION_ID": str(sub["submission_id"]),
        "SUBMITTER_ATTEMPT": str(attempt),
        "SUBMITTER_DATA_DIR": sub.get("volume_mount") or "/data",
    })
    if metrics_file:
        env["SUBMITTER_METRICS_FILE"] = metrics_file
    if sub.get("outputs"):
        env["SUBMITTER_OUTPUT_DIR"] = sub["outputs"]
    if sub.get("checkpoints"):
        env["SUBMITTER_CHECKPOINT_DIR"] = sub["checkpoints"]
    return env
