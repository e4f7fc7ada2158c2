"""The Batch wrapper (`runtime.pyz batch`, the job definition's command in the user's image): one AWS Batch
job attempt of one run (lifecycle.Attempt) with the command as a child process, leaving the same S3 layout
and status documents as the pool. Exit codes: 0 the run succeeded; contract.EXIT_RETRY another Batch attempt is
wanted (the job definition retries on it); anything else ends the job (the run's status says why)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from submitter import contract
from submitter.contract import Layout
from submitter.runtime import ledger
from submitter.runtime.imds import IMDS_ERRORS, Imds
from submitter.runtime.lifecycle import Attempt
from submitter.runtime.pool import spot_price
from submitter.runtime.rules import RELEASE, container_command
from submitter.runtime.seams import Host, Process, Settlement, read_status
from submitter.runtime.store import Store, connect

log = logging.getLogger("submitter.runtime")

STOP_GRACE = 20  # Batch sends SIGKILL 30 s after its SIGTERM; the uploads need the rest
WORK = Path("/tmp/submitter-run")
SIGTERM_REASON = ("AWS Batch stopped the container (SIGTERM): a spot reclaim, the host leaving, or a terminate "
                  "without `submitter cancel`")


def pick_run(runs: list[dict[str, Any]], environ: Mapping[str, str]) -> dict[str, Any]:
    """This job's run: the array child's index into the submission's runs, or the only run of a plain job."""
    index = int(environ.get("AWS_BATCH_JOB_ARRAY_INDEX") or 0)
    if not 0 <= index < len(runs):
        raise ValueError(f"array index {index} is outside the submission's {len(runs)} run(s)")
    run = dict(runs[index])
    submission = str(environ.get("SUBMITTER_SUBMISSION_ID", ""))
    if not contract.is_run_of(str(run.get("run_id")), submission):  # it becomes a key and a path
        raise ValueError(f"the batch record's run id {run.get('run_id')!r} is not a run of {submission}")
    return run


def final_attempt(environ: Mapping[str, str]) -> bool:
    """True when Batch has no attempt left after this one (retryStrategy.attempts)."""
    return int(environ.get("AWS_BATCH_JOB_ATTEMPT") or 1) >= int(environ.get("SUBMITTER_BATCH_ATTEMPTS") or 1)


def settle(state: str, fields: dict[str, Any], action: str, last: bool) -> tuple[str, dict[str, Any], int]:
    """(state, fields, exit code) from the lifecycle's decision. RELEASE (run it again) becomes EXIT_RETRY,
    which the job definition retries, unless Batch has no attempt left: then the run fails and says so."""
    if action == RELEASE:
        if not last:
            return state, fields, contract.EXIT_RETRY
        reason = fields.get("reason") or state
        return contract.FAILED, {**fields, "reason": f"{reason}; no AWS Batch attempt left"}, 1
    return state, fields, 0 if state == contract.SUCCEEDED else 1


class ExitCode(Settlement):
    """Batch is the queue: the attempt settles the run by the wrapper's exit code."""

    def __init__(self, last: bool) -> None:
        self.last = last
        self.code = 1

    def adjust(self, state: str, fields: dict[str, Any], action: str) -> tuple[str, dict[str, Any]]:
        state, fields, self.code = settle(state, fields, action, self.last)
        return state, fields

    def settle(self, state: str, action: str) -> None:
        pass  # the exit code says it

    def release(self) -> None:
        self.code = contract.EXIT_RETRY if not self.last else 1


class ChildProcess(Process):
    """The command as a child process in its own process group, in the job's container."""

    noun = "command"

    def __init__(self, sub: dict[str, Any], work: Path, base_env: Mapping[str, str]) -> None:
        self.sub, self.base_env = sub, dict(base_env)
        self.data_dir = Path(sub.get("volume_mount") or "/data")
        self.outputs_dir = Path(sub["outputs"]) if sub.get("outputs") else work / "outputs"
        self.checkpoints_dir = Path(sub["checkpoints"]) if sub.get("checkpoints") else work / "checkpoints"
        self.logs_dir = work / "logs"
        self.metrics_dir = work / "metrics"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str], secrets: dict[str, str]) -> None:
        command = container_command(self.sub.get("command"))
        if not command:
            raise ValueError("the submission has no command (Batch runs the wrapper instead of the image's CMD)")
        # The job's own SUBMITTER_* settings (bucket, attempts) are the wrapper's, not the command's.
        child = {k: v for k, v in self.base_env.items() if not k.startswith("SUBMITTER_")}
        child.update(secrets)
        child.update(env)
        with (self.logs_dir / "container.log").open("ab") as sink:
            self.proc = subprocess.Popen(command, env=child, stdout=sink, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: int) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=min(STOP_GRACE, grace))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        except ProcessLookupError:
            proc.wait(timeout=30)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def batch_host(store: Store, environ: Mapping[str, str], imds: Imds | None) -> Host:
    """The Host of a Batch attempt: where it runs, from IMDS when the container can reach it."""
    layout = Layout(environ.get("SUBMITTER_PREFIX", "submitter"))
    host = Host(store, layout, {}, {"batch_job_id": environ.get("AWS_BATCH_JOB_ID", "")}, imds=imds,
                imds_optional=True, stop_reason=SIGTERM_REASON, label="wrapper", echo_log=True)
    if imds is not None:
        try:
            host.identity.update({"instance_id": imds.get("meta-data/instance-id") or "unknown", **imds.placement()})
            host.price = spot_price(host)
        except IMDS_ERRORS as exc:
            log.warning("IMDS: %s (is the hop limit 1?); cost is reported as 0", exc)
            host.imds = None
    return host


class Wrapper:
    """One Batch job attempt: find this job's run, then run one lifecycle attempt of it."""

    def __init__(self, store: Store, environ: Mapping[str, str], work: Path = WORK,
                 imds: Imds | None = None) -> None:
        self.environ = dict(environ)
        self.submission = self.environ["SUBMITTER_SUBMISSION_ID"]
        self.work = work
        self.host = batch_host(store, self.environ, imds)
        self.settlement = ExitCode(final_attempt(self.environ))
        self.attempt: Attempt | None = None

    def main(self) -> int:
        try:
            return self.execute()
        except Exception as exc:  # never end silently: status.json says why
            log.exception("wrapper error")
            if self.attempt is None:
                return 1
            self.attempt.abort(f"wrapper error: {type(exc).__name__}: {exc}")
            return self.settlement.code

    def execute(self) -> int:
        host, layout = self.host, self.host.layout
        host.sub = host.store.read_json(layout.submission_doc(self.submission)) or {}
        runs = host.store.read_json(layout.batch_runs(self.submission))
        if not host.sub or not runs:
            raise RuntimeError(f"no {layout.submission_doc(self.submission)} or {layout.batch_runs(self.submission)}")
        run = pick_run(list(runs) if isinstance(runs, list) else [], self.environ)
        status = read_status(host, str(run["run_id"]))
        if status.terminal:
            log.info("run %s is already %s: nothing to do", run["run_id"], status.state)
            return 0 if status.state == contract.SUCCEEDED else 1
        log.info("run %s: Batch job %s, attempt %s", run["run_id"], self.environ.get("AWS_BATCH_JOB_ID", "?"),
                 self.environ.get("AWS_BATCH_JOB_ATTEMPT", "?"))
        over = ledger.reached(host.store, layout, host.sub)
        if over:  # the month's spend reached the budget: this job starts nothing, and is not retried
            log.warning("run %s: %s", run["run_id"], over)
            ledger.leave(host.store, layout, host.sub, str(run["run_id"]), over)
            return 1
        process = ChildProcess(host.sub, self.work, self.environ)
        self.attempt = Attempt(host, run, status, process, self.settlement)
        self.attempt.execute()
        return self.settlement.code


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    store = connect(region, environ["SUBMITTER_BUCKET"], environ.get("SUBMITTER_BUCKET_OWNER", ""))
    wrapper = Wrapper(store, environ, imds=Imds(timeout=1.0))

    def on_term(signum: int, frame: Any) -> None:
        log.warning("signal %d: AWS Batch is stopping this container", signum)
        wrapper.host.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    return wrapper.main()


if __name__ == "__main__":
    sys.exit(main())
