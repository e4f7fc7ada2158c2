"""The AWS Batch backend against moto's Batch in-process, without running containers: what `init --batch`
creates, the job definition a submit registers, a sweep as one array job, and cancel terminating it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from submitter import contract, execute
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends.batch import job as batch
from submitter.backends.batch import setup
from submitter.backends.batch import submit as batch_submit
from submitter.errors import SettingsError
from submitter.progress import NullProgress
from submitter.runtime import artefact
from submitter.settings import Settings
from submitter.spec import load

REGION = "us-east-1"
SPEC = """\
name: bexp
image:
  uri: {uri}
command: [python, train.py]
env: {{EPOCHS: "2"}}
resources:
  instance_types: [{types}]
  backend: {backend}
checkpoints: /checkpoints
limits: {{max_runtime: 30m}}
sweep:
  LR: [0.1, 0.01]
  BATCH: [16, 32, 64]
retries: {{on_interruption: 2, on_failure: 1}}
"""
MOTO_CONFIG = {"batch": {"use_docker": False}, "iam": {"load_aws_managed_policies": True}}


@pytest.fixture()
def aws_env(moto_account):
    with moto_account("bbucket", "btrain", config=MOTO_CONFIG) as (session, uri):
        yield Aws(session, REGION, bucket="bbucket"), uri


SETTINGS = Settings(bucket="bbucket", region=REGION, prefix="bp", batch_max_vcpus=64)


def _project(tmp_path: Path, uri: str, types: str = "g4dn.xlarge, g5.xlarge", backend: str = "batch") -> Path:
    (tmp_path / "job.yaml").write_text(SPEC.format(uri=f"{uri}:v1", types=types, backend=backend))
    return tmp_path / "job.yaml"


def _submit(aws: Aws, spec: Path, backend: str | None = None, submission: str | None = None):
    return execute.submit(aws, SETTINGS, [load(spec)], {}, spec.parent, NullProgress(), engine=_no_engine,
                          submission=submission, backend=backend)


def _no_engine():
    raise AssertionError("a prebuilt image needs no docker engine")


def _s3_json(aws: Aws, key: str):
    return json.loads(aws.session.client("s3").get_object(Bucket="bbucket", Key=key)["Body"].read())


def test_init_batch_creates_spot_environments_and_queues_once(aws_env) -> None:
    aws, _ = aws_env
    said: list[str] = []
    first = setup.ensure_batch(aws, SETTINGS, said.append)
    again = setup.ensure_batch(aws, SETTINGS, said.append)
    assert first["compute_environments"] == again["compute_environments"]
    assert any(line.startswith("created compute environment") for line in said)
    assert any(line.startswith("found compute environment") for line in said)

    client = aws.session.client("batch")
    envs = {e["computeEnvironmentName"]: e for e in client.describe_compute_environments()["computeEnvironments"]}
    assert set(envs) == {batch.COMPUTE_ENVIRONMENT, batch.GPU_COMPUTE_ENVIRONMENT}
    for env in envs.values():
        resources = env["computeResources"]
        assert env["type"] == "MANAGED" and env["state"] == "ENABLED"
        assert resources["type"] == "SPOT"
        assert resources["allocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
        assert (resources["minvCpus"], resources["maxvCpus"]) == (0, 64)
        assert resources["instanceRole"] == first["instance_profile"]
        assert resources["launchTemplate"] == {"launchTemplateName": batch.LAUNCH_TEMPLATE, "version": "$Latest"}
        assert env["serviceRole"] == first["service_role"]
    assert envs[batch.COMPUTE_ENVIRONMENT]["computeResources"]["instanceTypes"] == ["optimal"]
    assert "g4dn" in envs[batch.GPU_COMPUTE_ENVIRONMENT]["computeResources"]["instanceTypes"]

    queues = {q["jobQueueName"]: q for q in client.describe_job_queues()["jobQueues"]}
    assert set(queues) == {batch.JOB_QUEUE, batch.GPU_JOB_QUEUE}
    assert queues[batch.GPU_JOB_QUEUE]["computeEnvironmentOrder"][0]["computeEnvironment"] == \
        envs[batch.GPU_COMPUTE_ENVIRONMENT]["computeEnvironmentArn"]
    assert all(q["state"] == "ENABLED" for q in queues.values())

    # The hosts' security group has no inbound rule; the instance role carries the ECS policy.
    ec2 = aws.session.client("ec2")
    # The hosts launch with IMDSv2 only (hop limit 1) and an encrypted root volume.
    template = ec2.describe_launch_template_versions(LaunchTemplateId=first["launch_template"],
                                                     Versions=["$Latest"])["LaunchTemplateVersions"][0]
    data = template["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    group = ec2.describe_security_groups(GroupIds=[first["security_group"]])["SecurityGroups"][0]
    assert group["IpPermissions"] == []
    attached = aws.session.client("iam").list_attached_role_policies(RoleName=batch.INSTANCE_ROLE)
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == ["AmazonEC2ContainerServiceforEC2Role"]


def test_a_changed_max_vcpus_updates_the_environment(aws_env) -> None:
    from dataclasses import replace

    aws, _ = aws_env
    setup.ensure_batch(aws, SETTINGS, lambda _: None)
    said: list[str] = []
    calls: list[dict] = []
    # moto accepts UpdateComputeEnvironment but does not apply computeResources: assert the request instead.
    aws.client("batch").meta.events.register(
        "provide-client-params.batch.UpdateComputeEnvironment", lambda params, **_: calls.append(dict(params)))
    setup.ensure_batch(aws, replace(SETTINGS, batch_max_vcpus=128), said.append)
    assert any("max vCPUs 64 -> 128" in line for line in said)
    assert {c["computeEnvironment"]: c["computeResources"] for c in calls} == {
        batch.COMPUTE_ENVIRONMENT: {"maxvCpus": 128}, batch.GPU_COMPUTE_ENVIRONMENT: {"maxvCpus": 128}}


def test_an_environment_made_before_the_launch_template_gets_it(aws_env) -> None:
    aws, _ = aws_env
    client = aws.client("batch")
    setup.ensure_batch(aws, SETTINGS, lambda _: None)
    stale = {e["computeEnvironmentName"]: e for e in client.describe_compute_environments()["computeEnvironments"]}
    for env in stale.values():
        del env["computeResources"]["launchTemplate"]  # as an earlier version created it
    calls: list[dict] = []
    client.meta.events.register("provide-client-params.batch.UpdateComputeEnvironment",
                                lambda params, **_: calls.append(dict(params)))
    said = [setup._bring_up_to_date(client, env, 64) for env in stale.values()]
    assert all("IMDSv2" in line for line in said), said
    wanted = {"launchTemplate": {"launchTemplateName": batch.LAUNCH_TEMPLATE, "version": "$Latest"}}
    assert {c["computeEnvironment"]: c["computeResources"] for c in calls} == {
        batch.COMPUTE_ENVIRONMENT: wanted, batch.GPU_COMPUTE_ENVIRONMENT: wanted}


def test_a_gpu_sweep_becomes_one_array_job_with_the_right_definition(aws_env, tmp_path: Path) -> None:
    aws, uri = aws_env
    setup.ensure_batch(aws, SETTINGS, lambda _: None)
    (sub,) = _submit(aws, _project(tmp_path, uri))
    plan = sub.plan
    assert sub.backend.name == "batch" and len(plan.runs) == 6
    client = aws.session.client("batch")

    record = _s3_json(aws, f"bp/submissions/{plan.submission_id}/batch.json")
    assert record["job_queue"] == batch.GPU_JOB_QUEUE and record["array_size"] == 6
    assert record["runs"][plan.runs[5].run_id] == f"{record['job_id']}:5"

    (definition,) = client.describe_job_definitions(jobDefinitionName=f"submitter-{plan.job}")["jobDefinitions"]
    assert definition["jobDefinitionArn"] == record["job_definition"]
    container = definition["containerProperties"]
    assert container["image"] == sub.image_uri and "@sha256:" in sub.image_uri
    requirements = {r["type"]: r["value"] for r in container["resourceRequirements"]}
    assert requirements == {"VCPU": "4", "MEMORY": str(int(16384 * 0.9)), "GPU": "1"}
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["SUBMITTER_SUBMISSION_ID"] == plan.submission_id and env["SUBMITTER_BUCKET"] == "bbucket"
    assert env["SUBMITTER_BATCH_ATTEMPTS"] == "4"
    assert container["mountPoints"] == [{"sourceVolume": "data", "containerPath": "/data", "readOnly": False}]
    assert container["command"] == artefact.batch_command()
    assert env[artefact.RUNTIME_SHA256_ENV] == artefact.sha256()
    assert container["jobRoleArn"] == record["job_role"]
    assert definition["timeout"] == {"attemptDurationSeconds": 30 * 60 + batch.STOP_MARGIN_S}
    retry = definition["retryStrategy"]
    assert retry["attempts"] == 1 + 2 + 1
    # moto lower-cases the actions it stores
    assert [(e.get("onStatusReason"), e.get("onExitCode"), e.get("onReason"), e["action"].upper())
            for e in retry["evaluateOnExit"]] == [("Host EC2*", None, None, "RETRY"), (None, "75", None, "RETRY"),
                                                  (None, None, "*", "EXIT")]

    (job,) = client.describe_jobs(jobs=[record["job_id"]])["jobs"]
    assert job["arrayProperties"]["size"] == 6
    assert job["jobName"] == plan.submission_id
    assert job["jobQueue"].endswith(f"job-queue/{batch.GPU_JOB_QUEUE}")
    children = client.list_jobs(arrayJobId=record["job_id"])["jobSummaryList"]
    assert len(children) == 6

    # The documents the wrapper reads, and what status/results read, in the pool's layout.
    runs = _s3_json(aws, f"bp/submissions/{plan.submission_id}/runs.json")
    assert [r["run_id"] for r in runs] == [r.run_id for r in plan.runs]
    assert runs[4]["env"] == {"EPOCHS": "2", "LR": "0.01", "BATCH": "32"}
    doc = _s3_json(aws, f"bp/submissions/{plan.submission_id}/submission.json")
    assert doc["backend"] == "batch" and doc["image"] == sub.image_uri and doc["checkpoints"] == "/checkpoints"
    keys = {o["Key"] for o in aws.session.client("s3").list_objects_v2(
        Bucket="bbucket", Prefix=f"bp/submissions/{plan.submission_id}/")["Contents"]}
    assert {f"bp/submissions/{plan.submission_id}/{n}" for n in (contract.RUNTIME_ARTEFACT, "queued")} <= keys
    staged = aws.session.client("s3").get_object(Bucket="bbucket", Key=f"bp/submissions/{plan.submission_id}/"
                                                 f"{contract.RUNTIME_ARTEFACT}")["Body"].read()
    assert staged == artefact.build()
    assert _s3_json(aws, f"bp/runs/{plan.runs[0].run_id}/status.json")["state"] == "queued"

    # The job role holds what a run may reach, none of what a pool host does.
    policy = aws.session.client("iam").get_role_policy(RoleName=plan.role, PolicyName="submitter-run")
    sids = {s["Sid"] for s in policy["PolicyDocument"]["Statement"]}
    assert "OwnRunWrites" in sids and not sids & {"OwnQueue", "LeaveOwnGroup", "PullTrainingImage"}
    trust = aws.session.client("iam").get_role(RoleName=plan.role)["Role"]["AssumeRolePolicyDocument"]
    assert "ecs-tasks.amazonaws.com" in json.dumps(trust)

    # No pool resources were made.
    assert aws.session.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert aws.session.client("sqs").list_queues().get("QueueUrls", []) == []


def test_a_retried_submit_submits_nothing_twice(aws_env, tmp_path: Path) -> None:
    aws, uri = aws_env
    setup.ensure_batch(aws, SETTINGS, lambda _: None)
    (first,) = _submit(aws, _project(tmp_path, uri))
    _submit(aws, _project(tmp_path, uri), submission=first.plan.submission_id)
    client = aws.session.client("batch")
    parents = [j for j in client.list_jobs(jobQueue=batch.GPU_JOB_QUEUE)["jobSummaryList"] if ":" not in j["jobId"]]
    assert len(parents) == 1


def test_cpu_single_run_is_a_plain_job_via_the_backend_flag(aws_env, tmp_path: Path) -> None:
    aws, uri = aws_env
    setup.ensure_batch(aws, SETTINGS, lambda _: None)
    spec = _project(tmp_path, uri, types="c5.xlarge, m5.xlarge", backend="pool")
    spec.write_text(spec.read_text().split("sweep:")[0] + "retries: {on_interruption: 20}\n")
    (sub,) = _submit(aws, spec, backend="batch")
    record = _s3_json(aws, f"bp/submissions/{sub.plan.submission_id}/batch.json")
    assert record["job_queue"] == batch.JOB_QUEUE and record["array_size"] is None
    client = aws.session.client("batch")
    (job,) = client.describe_jobs(jobs=[record["job_id"]])["jobs"]
    assert "arrayProperties" not in job
    (definition,) = client.describe_job_definitions(jobDefinitionName="submitter-bexp")["jobDefinitions"]
    requirements = {r["type"]: r["value"] for r in definition["containerProperties"]["resourceRequirements"]}
    assert requirements == {"VCPU": "4", "MEMORY": str(int(8192 * 0.9))}  # the smaller of the two; no GPU
    assert definition["retryStrategy"]["attempts"] == batch.MAX_ATTEMPTS  # 1 + 20 is over Batch's limit


def test_submit_without_init_batch_says_what_to_run(aws_env, tmp_path: Path) -> None:
    aws, uri = aws_env
    with pytest.raises(SettingsError, match="init --batch"):
        _submit(aws, _project(tmp_path, uri))
    assert aws.session.client("s3").list_objects_v2(Bucket="bbucket").get("KeyCount") == 0


def test_cancel_terminates_the_array_job(aws_env, tmp_path: Path) -> None:
    aws, uri = aws_env
    setup.ensure_batch(aws, SETTINGS, lambda _: None)
    (sub,) = _submit(aws, _project(tmp_path, uri))
    plan = sub.plan
    record = _s3_json(aws, f"bp/submissions/{plan.submission_id}/batch.json")
    # One run had started before the cancel; the others never did.
    started = plan.runs[0].run_id
    s3 = aws.session.client("s3")
    s3.put_object(Bucket="bbucket", Key=f"bp/runs/{started}/status.json", Body=json.dumps(
        {"run_id": started, "state": "running", "started_at": "2026-01-01T00:00:00Z"}).encode())

    layout = contract.Layout("bp")
    bucket = S3(aws.client("s3"), "bbucket")
    terminated = batch_submit.cancel(aws, bucket, layout, plan.submission_id)
    assert terminated == [record["job_id"]]
    (job,) = aws.session.client("batch").describe_jobs(jobs=[record["job_id"]])["jobs"]
    assert job["statusReason"] == "cancelled with submitter cancel"
    assert s3.head_object(Bucket="bbucket", Key=f"bp/submissions/{plan.submission_id}/cancel")
    states = {r.run_id: _s3_json(aws, f"bp/runs/{r.run_id}/status.json")["state"] for r in plan.runs}
    assert states.pop(started) == "running"  # its wrapper sees the cancel object and settles it
    assert set(states.values()) == {"cancelled"}

    # One run of the array: its child only.
    (sub2,) = _submit(aws, _project(tmp_path, uri))
    record2 = _s3_json(aws, f"bp/submissions/{sub2.plan.submission_id}/batch.json")
    one = sub2.plan.runs[3].run_id
    assert batch_submit.cancel(aws, bucket, layout, sub2.plan.submission_id, runs=[one]) == [
        f"{record2['job_id']}:3"]
    assert s3.head_object(Bucket="bbucket", Key=f"bp/runs/{one}/cancel")

    # A pool submission is not Batch's to cancel.
    assert batch_submit.cancel(aws, bucket, layout, "bexp-20260101-000000-abcdef") == []


def test_submitter_cancel_of_a_batch_submission_terminates_its_job(aws_env, tmp_path: Path) -> None:
    """The same `cancel` that stops pool workers terminates the Batch array job."""
    from submitter import cancel, tracking

    aws, uri = aws_env
    setup.ensure_batch(aws, SETTINGS, lambda _: None)
    (sub,) = _submit(aws, _project(tmp_path, uri))
    record = _s3_json(aws, f"bp/submissions/{sub.plan.submission_id}/batch.json")
    s3 = S3(aws.client("s3"), "bbucket")
    where = tracking.Where("bbucket", "bp")
    said: list[str] = []
    result = cancel.cancel(aws, s3, where, cancel.scope(s3, where, sub.plan.submission_id), said.append,
                           wait_s=5, poll_s=0.2)
    (job,) = aws.session.client("batch").describe_jobs(jobs=[record["job_id"]])["jobs"]
    assert job["statusReason"] == "cancelled with submitter cancel"
    assert any(record["job_id"] in line for line in said), said
    assert {st["state"] for st in result["runs"]} == {"cancelled"}


def test_a_forged_batch_record_terminates_no_job_of_another_submission(aws_env, tmp_path: Path) -> None:
    """The record names another submission's job (and a run id that is a path): neither is acted on."""
    aws, uri = aws_env
    setup.ensure_batch(aws, SETTINGS, lambda _: None)
    (mine,) = _submit(aws, _project(tmp_path, uri))
    (theirs,) = _submit(aws, _project(tmp_path, uri))
    key = f"bp/submissions/{mine.plan.submission_id}/batch.json"
    record = _s3_json(aws, key)
    other = _s3_json(aws, f"bp/submissions/{theirs.plan.submission_id}/batch.json")["job_id"]
    forged = {**record, "job_id": other, "runs": {**record["runs"], "../../x": other}}
    aws.session.client("s3").put_object(Bucket="bbucket", Key=key, Body=json.dumps(forged).encode())
    said: list[str] = []
    bucket = S3(aws.client("s3"), "bbucket")
    assert batch_submit.cancel(aws, bucket, contract.Layout("bp"), mine.plan.submission_id, say=said.append) == []
    (job,) = aws.session.client("batch").describe_jobs(jobs=[other])["jobs"]
    assert job.get("statusReason") != "cancelled with submitter cancel", "another submission's job runs on"
    assert any(other in line and "not a job of" in line for line in said), said
    listed = aws.session.client("s3").list_objects_v2(Bucket="bbucket", Prefix="bp/")["Contents"]
    assert not [o["Key"] for o in listed if ".." in o["Key"] or o["Key"].startswith("x/")]
