"""The two seams of a run attempt (runtime/lifecycle.py), and what every attempt on one worker shares: the
`Process` (a `docker run` container, or a child process under Batch), the `Settlement` (an SQS lease, or a
Batch exit code) and the `Host`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from submitter import contract
from submitter.contract import Layout, Status
from submitter.runtime.imds import Imds
from submitter.runtime.store import Store

if TYPE_CHECKING:
    from submitter.runtime.lifecycle import Attempt

TICK = 5.0  # process exit, spot notice, cancel, log chunks and limits are looked at this often


class Process:
    """How the run's command runs. Directories are on this host; the command sees them at the spec's paths."""

    noun = "process"
    data_dir: Path
    outputs_dir: Path
    checkpoints_dir: Path
    logs_dir: Path  # container.log (the command's output) and agent.log (this attempt's log) are kept here
    metrics_dir: Path  # the metrics stream's own directory, which the command writes (never logs_dir)

    @property
    def metrics_file(self) -> str:
        """SUBMITTER_METRICS_FILE: the metrics stream's path as the command sees it."""
        return str(self.metrics_dir / contract.METRICS_FILE)

    def prepare(self) -> None:
        """Make the directories (writable by any user: the image's user need not be root)."""
        for path in (self.outputs_dir, self.checkpoints_dir, self.logs_dir, self.metrics_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)

    def start(self, env: dict[str, str], secrets: dict[str, str]) -> None:
        """Start the command, its output appended to logs_dir/container.log; raises when it cannot."""
        raise NotImplementedError

    def wait(self, timeout: float) -> int | None:
        """The exit code once the command has ended within `timeout` seconds, else None."""
        raise NotImplementedError

    def stop(self, grace: int) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        raise NotImplementedError

    def exit_code(self) -> int | None:
        raise NotImplementedError

    def finish_output(self) -> None:
        """Wait until all of the command's output is in container.log."""

    def cleanup(self) -> None:
        """Remove what this attempt left on the host."""

    def keep(self) -> None:
        """Leave the stopped command and its directories for inspection (a kept instance, runtime/keep.py); where
        nothing can be kept, the same as cleanup."""
        self.cleanup()


class Settlement:
    """How the run's work item is settled: it was obtained from somewhere that must hear how it ended."""

    def adjust(self, state: str, fields: dict[str, Any], action: str) -> tuple[str, dict[str, Any]]:
        """The final state and fields, given that `action` (DELETE or RELEASE) will follow."""
        return state, fields

    def settle(self, state: str, action: str) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """After an error while settling: let the run be taken up again."""


@dataclass
class Host:
    """What every attempt on this worker shares."""

    store: Store
    layout: Layout
    sub: dict[str, Any]  # submission.json
    identity: dict[str, Any]  # status fields saying where attempts run (instance, type, zone, Batch job)
    price: float = 0.0
    imds: Imds | None = None
    imds_optional: bool = False  # Batch: a container may not reach IMDS (hop limit); stop asking after a failure
    stopping: bool = False  # set by SIGTERM
    stop_reason: str = "the host is shutting down"
    boot_error: str | None = None
    label: str = "agent"  # in the run's log lines
    echo_log: bool = False  # the command's output also to stdout (Batch: CloudWatch Logs reads it there)
    tick: float = TICK
    restored: set[tuple[str, str]] = field(default_factory=set)  # inputs already on this host
    handled: list[dict[str, str]] = field(default_factory=list)
    rebalance_seen: bool = False

    def on_begin(self) -> None:
        """Called as an attempt begins (the pool re-arms the host's dead-man switch)."""

    def keep(self, attempt: Attempt, state: str, action: str) -> dict[str, Any]:
        """Before a run's final status: when the run ending `state` (then `action`) leaves its container and files
        for inspection (the pool's kept instance, runtime/keep.py), the status fields saying so; else {}."""
        return {}

    def retries(self) -> dict[str, Any]:
        return dict(self.sub.get("retries") or {})

    def cancelled(self, run_id: str, which: int | None = None) -> bool:
        checks = [self.layout.submission_cancel(str(self.sub["submission_id"])), self.layout.run_cancel(run_id)]
        if which is not None:
            checks = [checks[which % 2]]
        return any(self.store.exists(key) for key in checks)


def read_status(host: Host, run_id: str) -> Status:
    """The run's status document; its identity fields filled in when it has none yet."""
    status = Status.from_json(host.store.read_json(host.layout.status(run_id)), run_id)
    return dataclasses.replace(status, run_id=status.run_id or run_id,
                               submission_id=status.submission_id or str(host.sub["submission_id"]),
                               job=status.job or str(host.sub.get("job", "")))
