"""`submitter notebook`: given a spec, submit it and wait for its first run; then serve a port of the run's
job container on localhost (`access.server`). Orchestration only: execute and access do the work."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from submitter import contract
from submitter.access.server import Notebook, serve
from submitter.access.target import Say
from submitter.aws.session import Aws
from submitter.errors import RemoteError, UsageError
from submitter.settings import Settings

RUNNING_WAIT_S = 1800  # a new submission: image push, instance boot and image pull, then the run starts


def open_notebook(aws: Aws, settings: Settings, target: str, port: int, local_port: int | None,
                  command: str | None, start: bool, cidr: str | None, say: Say,
                  on_ready: Callable[[Notebook], None], environ: Mapping[str, str], cwd: Path) -> None:
    """Serve `port` of run `target` on localhost until Ctrl-C; a spec file as `target` is submitted first."""
    run_id = target
    if Path(target).is_file():
        run_id = submit_and_wait(aws, settings, Path(target), environ, cwd, say)
    serve(aws, settings, run_id, port, local_port, command, start, cidr, say, on_ready)


def submit_and_wait(aws: Aws, settings: Settings, spec_file: Path, environ: Mapping[str, str], cwd: Path, say: Say,
                    timeout_s: float = RUNNING_WAIT_S) -> str:
    """Submit a spec (with the key pair) and wait until its first run is running; returns that run id."""
    from submitter import execute, image, progress, tracking
    from submitter import spec as spec_mod
    from submitter.aws.s3 import S3

    if not settings.ssh_key:
        raise UsageError("notebook SPEC", "no key pair for the instances, so nothing could log in",
                         "run `submitter init --key-pair NAME` (sets SUBMITTER_SSH_KEY), or set SUBMITTER_SSH_KEY")
    (submitted,) = execute.submit(aws, settings, spec_mod.load_many([spec_file]), environ, cwd,
                                  progress.for_stream(as_json=False), image.engine)
    run_id = submitted.plan.runs[0].run_id
    say(f"submitted {submitted.plan.submission_id}; waiting for {run_id} to run")
    assert settings.bucket
    s3, where = S3.connect(aws, settings.bucket), tracking.Where(settings.bucket, settings.prefix)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (status,) = tracking.statuses(s3, where, [run_id])
        if status.get("state") == contract.RUNNING:
            return run_id
        if status.get("state") in contract.TERMINAL:
            raise RemoteError(f"run {run_id}", f"ended ({status.get('state')}) before it could be opened",
                              f"see `submitter logs {run_id}`")
        time.sleep(3)
    raise RemoteError(f"run {run_id}", f"not running after {timeout_s / 60:.0f} minutes",
                      f"see `submitter status {run_id}`; then `submitter notebook {run_id}`")
