"""The pool's `Process`: the run's command in a `docker run` container on the worker's engine, its
directories on the data volume."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from submitter import contract
from submitter.runtime import credentials
from submitter.runtime.commands import CommandError, run
from submitter.runtime.rules import container_command
from submitter.runtime.seams import Process
from submitter.runtime.store import Store

log = logging.getLogger("submitter.runtime")


def docker_run_args(sub: dict[str, Any], run_id: str, instance_id: str, work: Path, run_dir: Path,
                    env: dict[str, str], env_file: Path | None, gpus: str | None) -> list[str]:
    # The default bridge, never the host's network: the container must not share the host's view of IMDS or
    # of the agent's own services.
    args = ["docker", "run", "--detach", "--name", container_name(run_id), "--network", "bridge",
            "--label", f"submitter.run={run_id}", "--label", f"submitter.instance={instance_id}",
            "--volume", f"{work / 'data'}:{sub.get('volume_mount') or '/data'}"]
    if sub.get("outputs"):
        args += ["--volume", f"{run_dir / 'outputs'}:{sub['outputs']}"]
    if sub.get("checkpoints"):
        args += ["--volume", f"{run_dir / 'checkpoints'}:{sub['checkpoints']}"]
    # The metrics stream's own directory: the logs directory (the agent's log) stays out of the container's reach.
    args += ["--volume", f"{run_dir / 'metrics'}:{contract.METRICS_MOUNT}"]
    for name, value in env.items():
        args += ["--env", f"{name}={value}"]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    if gpus:
        args += ["--gpus", gpus]
    return args + [sub["image"]] + container_command(sub.get("command"))


def container_name(run_id: str) -> str:
    return f"submitter-{run_id}"


def gpu_flag(gpus: Any, runtimes: dict[str, Any]) -> str | None:
    """`--gpus` value: none when the spec says 0 or the host has no NVIDIA runtime (a CPU instance type)."""
    if gpus in (0, "0") or "nvidia" not in runtimes:
        return None
    return "all" if gpus in (None, "auto", "all") else str(gpus)


def write_env_file(path: Path, secrets: dict[str, str]) -> None:
    """Secrets for `docker run --env-file`, readable by root only; never on the command line."""
    if any("\n" in v for v in secrets.values()):
        raise ValueError("a secret holds a line break, which docker's --env-file cannot carry")
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as sink:
        sink.writelines(f"{name}={value}\n" for name, value in secrets.items())


class DockerProcess(Process):
    noun = "container"

    def __init__(self, sub: dict[str, Any], run_id: str, instance_id: str, work: Path, gpus: str | None,
                 store: Store | None = None) -> None:
        self.sub, self.run_id, self.instance_id, self.work, self.gpus = sub, run_id, instance_id, work, gpus
        self.store = store  # assumes the job role for the credentials endpoint
        self.endpoint: credentials.CredentialServer | None = None
        self.name = container_name(run_id)
        self.run_dir = work / "runs" / run_id
        self.data_dir = work / "data"
        self.outputs_dir = self.run_dir / "outputs"
        self.checkpoints_dir = self.run_dir / "checkpoints"
        self.logs_dir = self.run_dir / "logs"
        self.metrics_dir = self.run_dir / "metrics"
        self.follower: subprocess.Popen[bytes] | None = None
        self.waiter: subprocess.Popen[bytes] | None = None

    @property
    def metrics_file(self) -> str:
        return f"{contract.METRICS_MOUNT}/{contract.METRICS_FILE}"

    def start(self, env: dict[str, str], secrets: dict[str, str]) -> None:
        run(["docker", "rm", "--force", self.name], timeout=120)  # an earlier attempt on this host
        secrets = {**secrets, **self.job_role_endpoint()}  # in the root-only env file, not on the command line
        env_file = None
        if secrets:
            env_file = self.work / f".secrets-{self.run_id}.env"
            write_env_file(env_file, secrets)
            log.info("secrets %s written for the container (values not logged)", ", ".join(secrets))
        try:
            args = docker_run_args(self.sub, self.run_id, self.instance_id, self.work, self.run_dir, env,
                                   env_file, self.gpus)
            result = run(args, timeout=600)
        finally:
            if env_file is not None:
                env_file.unlink()  # docker has read it; the values now live only in the container
        if result.code != 0:
            raise CommandError("the container did not start", result)
        if self.gpus:
            log.info("run %s: --gpus %s", self.run_id, self.gpus)
        with (self.logs_dir / "container.log").open("ab") as sink:
            self.follower = subprocess.Popen(["docker", "logs", "--follow", self.name], stdout=sink,
                                             stderr=subprocess.STDOUT)
        self.waiter = subprocess.Popen(["docker", "wait", self.name], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)

    def job_role_endpoint(self) -> dict[str, str]:
        """The container-credentials variables when the spec asked for AWS access (a job role), else none: then
        the container has no AWS credentials at all."""
        role = self.sub.get("job_role_arn")
        if not role or self.store is None:
            return {}
        store, session = self.store, credentials.session_name(self.run_id)
        self.endpoint = credentials.serve(lambda: store.assume_role(str(role), session, credentials.ROLE_SECONDS))
        try:
            self.endpoint.credentials()  # a role that cannot be assumed fails the run now, saying why
        except CommandError as exc:
            raise CommandError(f"job role {role}", exc.result) from None
        log.info("run %s: job role %s served at %s", self.run_id, role, self.endpoint.url)
        return self.endpoint.env()

    def wait(self, timeout: float) -> int | None:
        assert self.waiter is not None
        try:
            out, _ = self.waiter.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        text = out.decode().strip()
        return int(text) if text.lstrip("-").isdigit() else -1  # -1: docker could not say

    def stop(self, grace: int) -> None:
        result = run(["docker", "stop", "--time", str(grace), self.name], timeout=grace + 60)
        if result.code != 0:
            log.warning("docker stop: %s", result.last_line())
        if self.waiter is not None and self.waiter.poll() is None:
            self.waiter.kill()

    def exit_code(self) -> int | None:
        inspected = run(["docker", "inspect", "--format", "{{.State.ExitCode}}", self.name], timeout=60)
        text = inspected.out.strip()
        return int(text) if inspected.code == 0 and text.lstrip("-").isdigit() else None

    def finish_output(self) -> None:
        if self.follower is not None:
            try:
                self.follower.wait(timeout=30)  # ends by itself once the container has stopped
            except subprocess.TimeoutExpired:
                self.follower.kill()

    def cleanup(self) -> None:
        self.keep()
        run(["docker", "rm", "--force", self.name], timeout=120)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def keep(self) -> None:
        """The stopped container and the run's directories stay (`docker start -ai`); its job role does not."""
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
