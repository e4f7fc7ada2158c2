"""The submit pipeline against moto in-process: what it creates, how it is configured, and that a retried
submit with the same id creates nothing twice. (The instances themselves run in tests/e2e.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from submitter import execute
from submitter.aws.session import Aws
from submitter.backends.pool import Names, pool_plan
from submitter.errors import SettingsError, UsageError
from submitter.progress import NullProgress
from submitter.runtime import artefact
from submitter.settings import Settings
from submitter.spec import load

REGION = "us-east-1"
SPEC = """\
name: fexp
image:
  uri: {uri}
command: [python, train.py]
env: {{EPOCHS: "2"}}
secrets: [FT_WANDB_API_KEY]
resources:
  instance_types: [c5.large, m5.large]
  volume_gb: 12
inputs:
  - {{source: ./data, target: /data/train}}
checkpoints: /checkpoints
limits: {{max_runtime: 20m, stop_grace: 45s}}
sweep:
  LR: [0.1, 0.05, 0.01]
queue: {{max_workers: 2}}
"""


@pytest.fixture()
def aws_env(moto_account):
    with moto_account("fbucket", "train") as (session, uri):
        yield Aws(session, REGION), uri


@pytest.fixture()
def project(tmp_path: Path, aws_env) -> Path:
    _, uri = aws_env
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1,2,0\n")
    (tmp_path / "job.yaml").write_text(SPEC.format(uri=f"{uri}:v1"))
    return tmp_path


def _submit(aws: Aws, project: Path, submission: str | None = None):
    settings = Settings(bucket="fbucket", region=REGION, prefix="p")
    loaded = load(project / "job.yaml")
    return execute.submit(aws, settings, [loaded], {"FT_WANDB_API_KEY": "s3cr3t"}, project, NullProgress(),
                          engine=_no_engine, submission=submission)


def _no_engine():
    raise AssertionError("a prebuilt image needs no docker engine")


def test_submit_creates_a_scoped_secure_worker_pool(aws_env, project: Path) -> None:
    aws, _ = aws_env
    (sub,) = _submit(aws, project)
    plan = sub.plan
    pool = pool_plan(plan)
    session = aws.session
    s3 = session.client("s3")

    # One message per run, on the submission's queue with a dead-letter queue.
    sqs = session.client("sqs")
    url = sqs.get_queue_url(QueueName=pool.names.queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith(pool.names.dead_letter_queue)
    bodies = []
    for _ in range(3):
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            bodies.append(json.loads(m["Body"]))
    assert sorted(b["run_id"] for b in bodies) == sorted(r.run_id for r in plan.runs)
    assert {b["env"]["LR"] for b in bodies} == {"0.1", "0.05", "0.01"}

    # Documents the instances read; the secret is in SSM, not in S3 or user-data.
    doc = json.loads(s3.get_object(Bucket="fbucket", Key=f"p/submissions/{plan.submission_id}/submission.json")
                     ["Body"].read())
    assert doc["image"].startswith(sub.image_uri.split("@")[0]) and "@sha256:" in doc["image"]
    assert doc["inputs"][0]["target"] == "/data/train" and doc["inputs"][0]["uri"].startswith("s3://fbucket/p/inputs/")
    assert doc["grace_seconds"] == 45 and doc["max_runtime"] == 1200
    assert doc["secrets"] == {"names": ["FT_WANDB_API_KEY"], "ssm_prefix": f"/submitter/{plan.submission_id}/"}
    param = session.client("ssm").get_parameter(Name=f"/submitter/{plan.submission_id}/FT_WANDB_API_KEY",
                                               WithDecryption=True)["Parameter"]
    assert param["Type"] == "SecureString" and param["Value"] == "s3cr3t"
    assert "s3cr3t" not in pool.user_data
    # The runtime the boot script fetches is byte for byte the artefact the tests ran, and its hash is pinned.
    staged = s3.get_object(Bucket="fbucket", Key=plan.layout.runtime(plan.submission_id))["Body"].read()
    assert staged == artefact.build() and artefact.sha256() in pool.user_data
    for run in plan.runs:
        status = json.loads(s3.get_object(Bucket="fbucket", Key=f"p/runs/{run.run_id}/status.json")["Body"].read())
        assert status["state"] == "queued"

    # The launch template: IMDSv2, encrypted gp3, terminate on shutdown, the role, no ingress.
    ec2 = session.client("ec2")
    version = ec2.describe_launch_template_versions(LaunchTemplateName=pool.names.launch_template)[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert version["MetadataOptions"]["HttpTokens"] == "required"
    assert version["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert version["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 12
    assert version["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert version["IamInstanceProfile"]["Name"] == pool.names.instance_profile
    assert base64.b64decode(version["UserData"]).decode() == pool.user_data
    (group_id,) = version["SecurityGroupIds"]
    sg = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    assert sg["IpPermissions"] == []

    # The group: spot only, two workers at most, over both types.
    group = session.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[pool.names.group])["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 2, 2)
    policy = group["MixedInstancesPolicy"]
    assert policy["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 0
    assert policy["InstancesDistribution"]["SpotAllocationStrategy"] == "price-capacity-optimized"
    assert {o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]} == {"c5.large", "m5.large"}

    # The instance role allows only this submission's things.
    iam = session.client("iam")
    role_policy = iam.get_role_policy(RoleName=pool.names.role, PolicyName="submitter-run")["PolicyDocument"]
    resources = [r for s in role_policy["Statement"] if s["Effect"] == "Allow" for r in s["Resource"]]
    # What submit wrote in any run's folder is denied outright (an explicit deny wins; it grants nothing)
    denied = [s for s in role_policy["Statement"] if s["Effect"] == "Deny"]
    assert [s["Resource"] for s in denied] == [["arn:aws:s3:::fbucket/p/runs/*/spec.json",
                                                "arn:aws:s3:::fbucket/p/runs/*/cancel"]]
    assert f"arn:aws:sqs:{REGION}:123456789012:{pool.names.queue}" in resources
    assert all(plan.submission_id in r for r in resources
               if r.startswith("arn:aws:s3:::fbucket/p/") and "/inputs/" not in r)
    # Of the staged inputs, only this submission's own, by digest (the policy is rendered again after staging).
    digest_prefix = doc["inputs"][0]["uri"].removeprefix("s3://").rsplit("/", 1)[0]
    assert [r for s in role_policy["Statement"] if s["Sid"] == "StagedInputs" for r in s["Resource"]] == [
        f"arn:aws:s3:::{digest_prefix}/*"]


def test_a_retried_submit_with_the_same_id_creates_nothing_twice(aws_env, project: Path) -> None:
    aws, _ = aws_env
    (first,) = _submit(aws, project)
    (again,) = _submit(aws, project, submission=first.plan.submission_id)
    assert pool_plan(again.plan).names == pool_plan(first.plan).names  # the deadline tag may move a second
    names = Names.of(first.plan.submission_id)
    session = aws.session
    sqs = session.client("sqs")
    url = sqs.get_queue_url(QueueName=names.queue)["QueueUrl"]
    count = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert count["ApproximateNumberOfMessages"] == "3"
    assert len(session.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]) == 1
    assert len(session.client("ec2").describe_launch_templates()["LaunchTemplates"]) == 1
    groups = session.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [names.security_group]}])["SecurityGroups"]
    assert len(groups) == 1
    inputs = session.client("s3").list_objects_v2(Bucket="fbucket", Prefix="p/inputs/")["KeyCount"]
    assert inputs == 2  # the file and its completion marker, uploaded once


def test_bad_input_is_refused_before_anything_is_created(aws_env, project: Path) -> None:
    aws, _ = aws_env
    settings = Settings(bucket="fbucket", region=REGION, prefix="p")
    loaded = load(project / "job.yaml")
    with pytest.raises(SettingsError, match="FT_WANDB_API_KEY"):
        execute.submit(aws, settings, [loaded], {}, project, NullProgress(), engine=_no_engine)
    with pytest.raises(SettingsError, match="the bucket does not exist"):
        execute.submit(aws, Settings(bucket="nope-bucket", region=REGION), [loaded], {"FT_WANDB_API_KEY": "x"},
                       project, NullProgress(), engine=_no_engine)
    with pytest.raises(UsageError, match="is not a submission id of job 'fexp'"):
        execute.submit(aws, settings, [loaded], {"FT_WANDB_API_KEY": "x"}, project, NullProgress(),
                       engine=_no_engine, submission="other-20261126-070000-abc123")
    session = aws.session
    assert session.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert session.client("sqs").list_queues().get("QueueUrls", []) == []
    assert session.client("s3").list_objects_v2(Bucket="fbucket").get("KeyCount") == 0


def test_status_and_results_read_s3_only(aws_env, project: Path, tmp_path: Path) -> None:
    from submitter import tracking
    from submitter.aws.s3 import S3

    aws, _ = aws_env
    (sub,) = _submit(aws, project)
    s3 = S3(aws.client("s3"), "fbucket")
    where = tracking.Where("fbucket", "p")
    run = sub.plan.runs[0].run_id
    s3.put_bytes(f"p/runs/{run}/outputs/metrics.json", b'{"acc": 0.9}')
    s3.put_bytes(f"p/runs/{run}/outputs/sub/model.json", b"{}")
    assert tracking.resolve(s3, where, "fexp") == [r.run_id for r in sub.plan.runs]
    assert tracking.resolve(s3, where, sub.plan.submission_id) == [r.run_id for r in sub.plan.runs]
    assert tracking.resolve(s3, where, run) == [run]
    assert {st["state"] for st in tracking.statuses(s3, where, [run])} == {"queued"}
    (root,) = tracking.download_results(s3, where, [run], tmp_path / "out").roots
    assert (root / "metrics.json").read_text() == '{"acc": 0.9}' and (root / "sub" / "model.json").exists()
    with pytest.raises(UsageError, match="no run, submission or job of that name"):
        tracking.resolve(s3, where, "nothing-here")
