"""The sandbox's AWS Batch (submitter/sandbox/batch.py): moto's Batch in server mode, in-process, running real
containers on this machine's docker engine as the sandbox daemon does. A job gets host networking, Batch's
variables (array index, attempt), its job role's credentials from the ECS-style endpoint and the sandbox's
endpoint, never the administrator's keys; a volume without a host path works; retries follow retryStrategy;
TerminateJob on an array job stops its children with SIGTERM first."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from submitter.sandbox import batch
from submitter.sandbox import state as st

REGION = "us-east-1"
IMAGE = "python:3.11-slim"  # a local image (scripts/setup makes it where Docker Hub is unreachable)
ECS_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
EC2_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
LABEL = "functional-batch"

# What a job reports about itself, as one JSON line on stdout (CloudWatch Logs, as moto keeps them).
REPORT = """
import json, os, urllib.request
out = {k: os.environ.get(k) for k in ("AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ATTEMPT", "AWS_BATCH_JQ_NAME",
                                      "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
uri = os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
if uri:
    request = urllib.request.Request(uri, headers={"Authorization": os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]})
    try:
        out["credentials"] = json.load(urllib.request.urlopen(request, timeout=10))
    except urllib.error.HTTPError as err:
        out["credentials_error"] = err.code
    bad = urllib.request.Request(uri, headers={"Authorization": "not-the-token"})
    try:
        urllib.request.urlopen(bad, timeout=10)
    except urllib.error.HTTPError as err:
        out["wrong_token"] = err.code
open("/data/written", "w").write("ok")
out["data"] = open("/data/written").read()
out["pid1"] = open("/proc/1/comm").read().strip()
print("REPORT " + json.dumps(out), flush=True)
"""
TRAP = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (print("got SIGTERM", flush=True), sys.exit(0)))
print("waiting", flush=True)
time.sleep(300)
"""


def _engine() -> Any:
    try:
        import docker

        engine = docker.from_env(timeout=30)
        engine.images.get(IMAGE)
        return engine
    except Exception as exc:  # the engine is part of this tier's setup (scripts/setup)
        pytest.skip(f"needs a docker engine with the {IMAGE} image: {exc}")


@pytest.fixture()
def moto_batch(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """moto in server mode with the sandbox's Batch patches, a job queue, and a client factory; all undone."""
    from moto.batch.models import BatchBackend, Job
    from moto.server import ThreadedMotoServer
    from moto.utilities.docker_utilities import DockerModel

    engine = _engine()
    for name in ("_get_container_property", "run", "describe"):
        monkeypatch.setattr(Job, name, Job.__dict__[name])
    monkeypatch.setattr(Job, "docker_client", DockerModel.docker_client, raising=False)
    monkeypatch.setattr(Job, "_submitter_sandbox", False, raising=False)
    for name in ("terminate_job", "cancel_job"):
        monkeypatch.setattr(BatchBackend, name, BatchBackend.__dict__[name])
    for name, value in batch.MOTO_SETTINGS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    port = st.free_port_base(47000, 60000)
    endpoint = f"http://127.0.0.1:{port}"
    batch.install(endpoint, REGION, LABEL)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint)

    iam = client("iam")
    service_role = iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    env = client("batch").create_compute_environment(
        computeEnvironmentName="fenv", type="UNMANAGED", state="ENABLED",
        serviceRole=service_role["Role"]["Arn"])
    client("batch").create_job_queue(jobQueueName="fqueue", state="ENABLED", priority=1, computeEnvironmentOrder=[
        {"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}])
    try:
        yield client, endpoint
    finally:
        batch.shutdown()
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30)
        server.stop()
        for container in engine.containers.list(all=True, filters={"label": f"{st.LABEL}={LABEL}"}):
            container.remove(force=True, v=True)


def _definition(client: Any, name: str, command: list[str], role: str | None = None,
                retry: dict[str, Any] | None = None) -> str:
    properties: dict[str, Any] = {
        "image": IMAGE, "command": command, "resourceRequirements": [
            {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        "volumes": [{"name": "data"}], "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}],
        "linuxParameters": {"initProcessEnabled": True}}
    if role:
        properties["jobRoleArn"] = role
    params: dict[str, Any] = {"jobDefinitionName": name, "type": "container", "containerProperties": properties}
    if retry:
        params["retryStrategy"] = retry
    return str(client("batch").register_job_definition(**params)["jobDefinitionArn"])


def _wait(client: Any, job_id: str, states: tuple[str, ...], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        (job,) = client("batch").describe_jobs(jobs=[job_id])["jobs"]
        if job["status"] in states:
            return dict(job)
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s"
        time.sleep(0.5)


def _log(client: Any, job: dict[str, Any]) -> list[str]:
    events = client("logs").get_log_events(logGroupName="/aws/batch/job",
                                           logStreamName=job["container"]["logStreamName"])["events"]
    return [e["message"] for e in events]


def _report(client: Any, job: dict[str, Any]) -> dict[str, Any]:
    (line,) = [m for m in _log(client, job) if m.startswith("REPORT ")]
    return dict(json.loads(line.removeprefix("REPORT ")))


def test_array_children_get_their_index_the_job_role_and_the_endpoint_never_admin_keys(moto_batch: Any) -> None:
    client, endpoint = moto_batch
    role = client("iam").create_role(RoleName="fjob-role", AssumeRolePolicyDocument=json.dumps(ECS_TRUST))
    definition = _definition(client, "freport", ["python3", "-c", REPORT], role=role["Role"]["Arn"])
    parent = client("batch").submit_job(jobName="farray", jobQueue="fqueue", jobDefinition=definition,
                                        arrayProperties={"size": 2})["jobId"]
    reports = {}
    for index in (0, 1):
        child = _wait(client, f"{parent}:{index}", ("SUCCEEDED", "FAILED"))
        assert child["status"] == "SUCCEEDED", child
        reports[index] = _report(client, child)
    assert _wait(client, parent, ("SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"
    for index, report in reports.items():
        assert report["AWS_BATCH_JOB_ARRAY_INDEX"] == str(index)
        assert report["AWS_BATCH_JOB_ATTEMPT"] == "1" and report["AWS_BATCH_JQ_NAME"] == "fqueue"
        assert report["AWS_ENDPOINT_URL"] == endpoint
        assert report["AWS_ACCESS_KEY_ID"] is None and report["AWS_SECRET_ACCESS_KEY"] is None
        assert report["wrong_token"] == 403
        assert report["data"] == "ok", "a volume with no host path is docker's own volume"
        assert report["pid1"] == "docker-init", "initProcessEnabled runs docker's init as PID 1"
        issued = report["credentials"]
        caller = boto3.client("sts", endpoint_url=endpoint, region_name=REGION,
                              aws_access_key_id=issued["AccessKeyId"], aws_secret_access_key=issued["SecretAccessKey"],
                              aws_session_token=issued["Token"]).get_caller_identity()
        assert caller["Arn"].endswith(f":assumed-role/fjob-role/{parent}-{index}"), caller
    # What DescribeJobs shows is what was registered: no token, no endpoint.
    (described,) = client("batch").describe_jobs(jobs=[f"{parent}:0"])["jobs"]
    shown = {e["name"] for e in described["container"]["environment"]}
    assert not shown & {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI"}, shown


def test_a_role_that_does_not_trust_ecs_tasks_gets_no_credentials(moto_batch: Any) -> None:
    client, _ = moto_batch
    role = client("iam").create_role(RoleName="fec2-role", AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    definition = _definition(client, "funtrusted", ["python3", "-c", REPORT], role=role["Role"]["Arn"])
    job = client("batch").submit_job(jobName="funtrusted", jobQueue="fqueue", jobDefinition=definition)["jobId"]
    report = _report(client, _wait(client, job, ("SUCCEEDED", "FAILED")))
    assert report["credentials_error"] == 500 and "credentials" not in report


def test_exit_codes_are_retried_as_the_retry_strategy_says(moto_batch: Any) -> None:
    client, _ = moto_batch
    strategy = {"attempts": 3, "evaluateOnExit": [{"onExitCode": "75", "action": "RETRY"},
                                                  {"onReason": "*", "action": "EXIT"}]}
    again = _definition(client, "fretry", ["sh", "-c", 'echo "attempt $AWS_BATCH_JOB_ATTEMPT"; '
                                           'test "$AWS_BATCH_JOB_ATTEMPT" = 2 || exit 75'], retry=strategy)
    failing = _definition(client, "ffail", ["sh", "-c", "exit 3"], retry=strategy)
    retried = client("batch").submit_job(jobName="fretry", jobQueue="fqueue", jobDefinition=again)["jobId"]
    failed = client("batch").submit_job(jobName="ffail", jobQueue="fqueue", jobDefinition=failing)["jobId"]
    job = _wait(client, retried, ("SUCCEEDED", "FAILED"), timeout=120)
    assert job["status"] == "SUCCEEDED" and len(job["attempts"]) == 2, job
    assert "attempt 2" in _log(client, job)
    job = _wait(client, failed, ("SUCCEEDED", "FAILED"))
    assert job["status"] == "FAILED" and len(job["attempts"]) == 1, job
    assert job["container"]["exitCode"] == 3


def test_terminating_an_array_job_stops_its_children_with_sigterm_first(moto_batch: Any) -> None:
    client, _ = moto_batch
    definition = _definition(client, "ftrap", ["python3", "-c", TRAP])
    parent = client("batch").submit_job(jobName="ftrap", jobQueue="fqueue", jobDefinition=definition,
                                        arrayProperties={"size": 2})["jobId"]
    for index in (0, 1):
        _wait(client, f"{parent}:{index}", ("RUNNING",))
    time.sleep(2)  # the command is up and has its handler
    client("batch").terminate_job(jobId=parent, reason="test cancel")
    started = time.monotonic()
    for index in (0, 1):
        child = _wait(client, f"{parent}:{index}", ("SUCCEEDED", "FAILED"), timeout=60)
        assert child["status"] == "FAILED" and child["statusReason"] == "test cancel", child
        assert "got SIGTERM" in _log(client, child), "SIGTERM before SIGKILL, as ECS stops a task"
    assert time.monotonic() - started < batch.STOP_TIMEOUT_S, "the command left on SIGTERM: no 30 s wait"
    assert _wait(client, parent, ("SUCCEEDED", "FAILED"))["status"] == "FAILED"
