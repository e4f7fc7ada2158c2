"""AWS Batch in the sandbox: moto's Batch backend docker-runs each job's container on the real engine
(moto/batch/models.py `Job.run`); this makes that run the way an ECS-EC2 Batch job runs where submitter relies on
it (docs/batch.md, "In the sandbox").

What moto leaves out, and what is done here, in the daemon's moto process only:
- AWS's managed policies are not loaded, so `init --batch` failed at AttachRolePolicy (NoSuchEntity): loaded.
- Host networking (ECS-EC2 Batch jobs use the host's network: Batch User Guide, "Networking modes for AWS Batch
  jobs"): moto's MOTO_DOCKER_NETWORK_MODE=host. The job reaches moto and the credentials endpoint on loopback.
- The job role: no credentials at all. Served here the ECS way, AWS_CONTAINER_CREDENTIALS_FULL_URI plus
  AWS_CONTAINER_AUTHORIZATION_TOKEN (a loopback http address, which the SDKs accept), STS credentials of the job
  definition's jobRoleArn (task_credentials.py), only while the job runs and only if the role trusts ECS tasks. The
  job never sees the administrator's keys. Plus the standard AWS_ENDPOINT_URL, so its calls reach moto.
- Batch's variables: AWS_BATCH_JOB_ARRAY_INDEX (moto sets none for array children), AWS_BATCH_JOB_ATTEMPT,
  AWS_BATCH_JQ_NAME, AWS_BATCH_CE_NAME.
- A volume without a host path (docker's own volume per container: moto raised KeyError on it), removed with
  the container; a mount point without readOnly (false, AWS's default; moto raised KeyError);
  `linuxParameters.initProcessEnabled` (docker's --init).
- Stopping: SIGTERM, then SIGKILL 30 s later (ECS's default ECS_CONTAINER_STOP_TIMEOUT), where moto sent SIGKILL
  at once; TerminateJob on an array job reaches its children; a job terminated before its start never starts.
- retryStrategy (moto ignored it): `attempts` and `evaluateOnExit` as AWS applies them; a terminated or
  timed-out job is not retried. An array parent whose children all ended, one failed, is FAILED. DescribeJobs
  shows the container's and each attempt's exit code.
Job containers carry the sandbox's label, so `sandbox down` removes them even after a daemon crash.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from submitter.sandbox import state as st
from submitter.sandbox.task_credentials import JobCredentials

log = logging.getLogger("submitter.sandbox.batch")

# moto's own switches, read from the environment when a backend is created or a job starts.
MOTO_SETTINGS = {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "MOTO_DOCKER_NETWORK_MODE": "host"}
STOP_TIMEOUT_S = 30  # ECS_CONTAINER_STOP_TIMEOUT's default: SIGKILL this long after SIGTERM
JOB_LABEL = f"{st.LABEL}.batch-job"


@dataclass
class _Config:
    endpoint: str
    region: str
    label: str
    credentials: JobCredentials


_config: _Config | None = None


# ---------------------------------------------------------------------------------------------- retries


def _matches(pattern: str | None, value: str) -> bool:
    """An evaluateOnExit pattern: exact, or a prefix ending in `*` (AWS allows `*` only at the end)."""
    if pattern is None:
        return True
    return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern


def retry_action(strategy: dict[str, Any] | None, attempts_made: int, exit_code: int | None, reason: str,
                 status_reason: str) -> str:
    """RETRY or EXIT after a failed attempt, as Batch decides it: no attempt left, EXIT; else the first
    evaluateOnExit entry whose given conditions all match; none matching, RETRY."""
    strategy = strategy or {}
    if attempts_made >= int(strategy.get("attempts") or 1):
        return "EXIT"
    code = "" if exit_code is None else str(exit_code)
    for rule in strategy.get("evaluateOnExit") or []:
        if (_matches(rule.get("onExitCode"), code) and _matches(rule.get("onReason"), reason)
                and _matches(rule.get("onStatusReason"), status_reason)):
            return str(rule.get("action", "EXIT")).upper()
    return "RETRY"


# ---------------------------------------------------------------------------------------------- the job


def job_environment(job: Any, config: _Config) -> dict[str, str]:
    """What Batch and ECS add to a job's environment (and the sandbox's endpoint)."""
    env = {"AWS_BATCH_JOB_ATTEMPT": str(len(job.attempts) + 1), "AWS_BATCH_JQ_NAME": job.job_queue.name,
           "AWS_ENDPOINT_URL": config.endpoint}
    if job.job_queue.environments:
        env["AWS_BATCH_CE_NAME"] = job.job_queue.environments[0].name
    if "index" in (job.array_properties or {}):
        env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(job.array_properties["index"])
    role = (job.job_definition.container_properties or {}).get("jobRoleArn")
    if role:
        env.update(config.credentials.grant(job.job_id, job.backend.account_id, role))
    return env


class _Container:
    """A job's container as moto's Job.run handles it, stopped and removed the ECS way."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def kill(self, *args: Any, **kwargs: Any) -> None:
        self._container.stop(timeout=STOP_TIMEOUT_S)  # SIGTERM, then SIGKILL: what StopTask does

    def remove(self, **kwargs: Any) -> None:
        self._container.remove(v=True, **kwargs)  # and its docker volume: the data lived on the host's disk


class _Containers:
    def __init__(self, engine: Any, job: Any, config: _Config) -> None:
        self._engine, self._job, self._config = engine, job, config

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine.containers, name)

    def run(self, **kwargs: Any) -> _Container:
        job = self._job
        if job.stop:  # terminated while it waited: Batch never starts it
            raise RuntimeError(f"terminated before it started: {job.job_stopped_reason}")
        properties = job.job_definition.container_properties or {}
        kwargs["init"] = bool((properties.get("linuxParameters") or {}).get("initProcessEnabled"))
        kwargs["mounts"] = [_volume_if_no_host(m) for m in kwargs.get("mounts") or []]
        kwargs["labels"] = {st.LABEL: self._config.label, JOB_LABEL: job.job_id}
        return _Container(self._engine.containers.run(**kwargs))


class _Engine:
    def __init__(self, engine: Any, job: Any, config: _Config) -> None:
        self._engine = engine
        self.containers = _Containers(engine, job, config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _volume_if_no_host(mount: dict[str, Any]) -> dict[str, Any]:
    """A volume with no host path is docker's own volume (ECS: "the Docker daemon assigns a host path")."""
    if mount.get("Type") == "bind" and not mount.get("Source"):
        return {**mount, "Type": "volume", "Source": None}
    return mount


# ---------------------------------------------------------------------------------------------- install


def install(endpoint: str, region: str, label: str) -> JobCredentials:
    """Patch moto's Batch as the module docstring says and start the credentials endpoint. Call before any
    IAM backend exists (the managed policies load with it)."""
    global _config
    os.environ.update(MOTO_SETTINGS)
    credentials = JobCredentials(region).start()
    _config = _Config(endpoint, region, label, credentials)
    _patch()
    return credentials


def shutdown() -> None:
    """Stop the endpoint and remove the job containers still running (as hosts go at `sandbox down`)."""
    global _config
    config, _config = _config, None
    if config is None:
        return
    config.credentials.stop()
    try:
        import docker

        engine = docker.from_env(timeout=30)
        for container in engine.containers.list(all=True, filters={"label": [f"{st.LABEL}={config.label}",
                                                                              JOB_LABEL]}):
            container.remove(force=True, v=True)
    except Exception as exc:  # `down` removes them by label too
        log.warning("batch job containers not removed: %s", exc)


def _patch() -> None:
    from moto.batch.models import BatchBackend, Job
    from moto.utilities.docker_utilities import DockerModel

    if getattr(Job, "_submitter_sandbox", False):
        return
    Job._submitter_sandbox = True  # type: ignore[attr-defined]
    original_property = Job._get_container_property
    original_run = Job.run
    original_describe = Job.describe
    original_terminate = BatchBackend.terminate_job
    original_cancel = BatchBackend.cancel_job
    engine_property = DockerModel.docker_client

    def _get_container_property(self: Any, p: str, default: Any) -> Any:
        value = original_property(self, p, default)
        config = _config
        if config is None or threading.current_thread() is not self:
            return value  # DescribeJobs shows what was registered, never the token
        if p == "environment":
            return list(value) + [{"name": k, "value": v} for k, v in job_environment(self, config).items()]
        if p == "volumes":  # moto reads host.sourcePath of every volume
            return [{**v, "host": {"sourcePath": None, **(v.get("host") or {})}} for v in value]
        if p == "mountPoints":  # moto reads readOnly, which AWS defaults to false
            return [{"readOnly": False, **m} for m in value]
        return value

    def docker_client(self: Any) -> Any:
        engine = engine_property.fget(self)  # type: ignore[attr-defined]
        config = _config
        return engine if config is None else _Engine(engine, self, config)

    def run(self: Any) -> None:
        try:
            while True:
                original_run(self)
                if self.latest_attempt is not None and self.exit_code is not None:
                    self.latest_attempt["container"]["exitCode"] = self.exit_code
                if _config is None or not _retry(self):
                    return
        finally:
            if _config is not None:
                _config.credentials.revoke(self.job_id)

    def describe(self: Any) -> dict[str, Any]:
        result: dict[str, Any] = original_describe(self)
        if _config is not None and self.exit_code is not None and "container" in result:
            result["container"]["exitCode"] = self.exit_code  # moto's full description dropped it
        children = self._child_jobs or []
        if (_config is not None and children and all(c.job_stopped for c in children)
                and any(c.status == "FAILED" for c in children)):
            self.status = result["status"] = "FAILED"  # moto only ever marked an array parent SUCCEEDED
        return result

    def terminate_job(self: Any, job_id: str, reason: str) -> None:
        original_terminate(self, job_id, reason)
        job = self.get_job_by_id(job_id)
        for child in (job._child_jobs or []) if job is not None and _config is not None else []:
            if not child.job_stopped:
                child.terminate(reason)

    def cancel_job(self: Any, job_id: str, reason: str) -> None:
        original_cancel(self, job_id, reason)
        job = self.get_job_by_id(job_id)
        for child in (job._child_jobs or []) if job is not None and _config is not None else []:
            if child.status in ("SUBMITTED", "PENDING", "RUNNABLE"):
                child.terminate(reason)

    Job._get_container_property = _get_container_property  # type: ignore[method-assign]
    Job.docker_client = property(docker_client)  # type: ignore[assignment,method-assign]
    Job.run = run  # type: ignore[method-assign]
    Job.describe = describe  # type: ignore[method-assign]
    BatchBackend.terminate_job = terminate_job  # type: ignore[method-assign]
    BatchBackend.cancel_job = cancel_job  # type: ignore[method-assign]


def _retry(job: Any) -> bool:
    """Whether a finished attempt is tried again; if so the job is back at SUBMITTED for moto's run."""
    if job.status != "FAILED" or job.stop or job.exit_code is None:
        return False  # succeeded, terminated, timed out or never started: Batch does not retry those
    strategy = job.job_definition.retry_strategy
    action = retry_action(strategy, len(job.attempts), job.exit_code, "", "Essential container in task exited")
    if action != "RETRY":
        return False
    log.info("batch job %s: exit code %s, attempt %d of %s: retrying", job.job_id, job.exit_code,
             len(job.attempts), (strategy or {}).get("attempts"))
    job.job_stopped, job.exit_code, job._tick = False, None, 0
    job.status = "SUBMITTED"
    return True
