"""The warm image cache against moto in-process: the lookup by digest, a submit's launch template mapping the
snapshot (and moto restoring a volume from it), `submitter cache` doing nothing when a snapshot exists, the
builder's RunInstances parameters, and gc choosing only our stale snapshots. (The builder itself runs in
tests/e2e/test_cache.py.)"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from submitter import cache, contract, execute
from submitter.aws.session import Aws
from submitter.backends.pool import Names
from submitter.cache import build, model
from submitter.plan import make_plan
from submitter.progress import NullProgress
from submitter.settings import Settings
from submitter.spec import load

REGION = "us-east-1"
SPEC = """\
name: cjob
image:
  uri: {uri}
command: [python, train.py]
resources:
  instance_types: [c5.large]
  volume_gb: 4
limits: {{max_runtime: 20m}}
"""
SETTINGS = Settings(bucket="cbucket", region=REGION, prefix="p")


@pytest.fixture()
def aws_env(moto_account):
    with moto_account("cbucket", "train") as (session, uri):
        yield Aws(session, REGION), uri


@pytest.fixture()
def project(tmp_path: Path, aws_env) -> Path:
    _, uri = aws_env
    (tmp_path / "job.yaml").write_text(SPEC.format(uri=f"{uri}:v1"))
    return tmp_path


def _no_engine() -> Any:
    raise AssertionError("a prebuilt image needs no docker engine")


def _digest(aws: Aws, project: Path) -> str:
    plan = make_plan(load(project / "job.yaml"), SETTINGS, execute.prices(aws, load(project / "job.yaml")),
                     account=aws.account())
    return str(execute.ensure_images(aws, SETTINGS, [plan], NullProgress(), _no_engine)[0].digest)


def _snapshot(aws: Aws, digest: str, created: datetime, size: int = 6, job: str = "cjob",
              bucket: str = "cbucket", state_tags: dict[str, str] | None = None) -> str:
    ec2 = aws.client("ec2")
    volume = ec2.create_volume(Size=size, AvailabilityZone=f"{REGION}a", Encrypted=True)["VolumeId"]
    tags = {contract.TAG_CACHE_IMAGE: digest, contract.TAG_CACHE_CREATED: contract.iso(created),
            contract.TAG_JOB: job, contract.TAG_BUCKET: bucket, contract.TAG_PREFIX: "p", **(state_tags or {})}
    return str(ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": k, "Value": v} for k, v in tags.items()]}])["SnapshotId"])


def test_a_pool_submit_maps_the_newest_cache_snapshot_of_its_image(aws_env, project: Path) -> None:
    aws, _ = aws_env
    digest = _digest(aws, project)
    now = datetime.now(timezone.utc)
    older = _snapshot(aws, digest, now - timedelta(days=2))
    newest = _snapshot(aws, digest, now - timedelta(hours=1))
    _snapshot(aws, digest, now, bucket="someone-else")  # another bucket's cache: never ours
    _snapshot(aws, "sha256:" + "9" * 64, now)  # another image

    assert cache.find(aws, "cbucket", "p", digest).snapshot_id == newest  # type: ignore[union-attr]
    (sub,) = execute.submit(aws, SETTINGS, [load(project / "job.yaml")], {}, project, NullProgress(),
                            engine=_no_engine)
    ec2 = aws.client("ec2")
    name = Names.of(sub.plan.submission_id).launch_template
    data = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Latest"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    (mapping,) = data["BlockDeviceMappings"]
    assert mapping["Ebs"]["SnapshotId"] == newest
    assert mapping["Ebs"]["VolumeSize"] == 6  # the snapshot's size: bigger than the spec's 4 GB
    assert mapping["Ebs"]["Encrypted"] is True
    # moto restores the volume of an instance launched from that template from the snapshot (the sandbox's runner
    # reads this SnapshotId to start the volume's file as the snapshot's copy).
    instance = ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateName": name},
                                 InstanceType="c5.large")["Instances"][0]
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}])
    assert newest in [v.get("SnapshotId") for v in volumes["Volumes"]]
    # While the submission's launch template lives, gc keeps the snapshot it maps, even with an age limit of 0.
    from submitter import gc, tracking
    from submitter.aws.s3 import S3

    swept = {o.id for o in gc.find(aws, S3.connect(aws, "cbucket"), tracking.Where("cbucket", "p"),
                                   cache_max_age_days=0) if o.kind == cache.KIND}
    assert older in swept and newest not in swept


def test_a_submit_without_a_cache_maps_a_blank_volume(aws_env, project: Path) -> None:
    aws, _ = aws_env
    (sub,) = execute.submit(aws, SETTINGS, [load(project / "job.yaml")], {}, project, NullProgress(),
                            engine=_no_engine)
    data = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName=Names.of(sub.plan.submission_id).launch_template, Versions=["$Latest"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert "SnapshotId" not in data["BlockDeviceMappings"][0]["Ebs"]
    assert data["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 4


def test_cache_does_nothing_when_the_image_has_a_completed_snapshot(aws_env, project: Path) -> None:
    aws, _ = aws_env
    digest = _digest(aws, project)
    snap = _snapshot(aws, digest, datetime.now(timezone.utc))
    loaded = load(project / "job.yaml")
    plan = make_plan(loaded, SETTINGS, execute.prices(aws, loaded), account=aws.account(), backend="pool")
    done = build.make(aws, SETTINGS, plan, NullProgress(), _no_engine)
    assert done["created"] is False and done["snapshot"]["snapshot_id"] == snap
    ec2 = aws.client("ec2")
    assert not [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]  # nothing launched


def test_the_builder_launches_as_the_job_would_but_stops_and_may_only_read_pull_and_report(
        aws_env, project: Path) -> None:
    aws, _ = aws_env
    loaded = load(project / "job.yaml")
    plan = make_plan(loaded, SETTINGS, execute.prices(aws, loaded), account=aws.account(), backend="pool")
    names = Names.of(plan.submission_id)
    params = model.builder_instance(plan, names, model.builder_user_data(plan, names))
    assert params["InstanceInitiatedShutdownBehavior"] == "stop"
    assert params["MetadataOptions"]["HttpTokens"] == "required"
    assert params["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert params["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    ec2 = aws.client("ec2")
    ami = aws.client("ssm").get_parameter(Name=model.ami_parameter(plan))["Parameter"]["Value"]
    instance = ec2.run_instances(MinCount=1, MaxCount=1, **{**params, "ImageId": ami,
                                                             "IamInstanceProfile": {}})["Instances"][0]
    user_data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]).decode().startswith("#!/bin/bash")  # encoded once
    behaviour = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"],
                                                Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    assert tags[contract.TAG_SUBMISSION] == plan.submission_id
    policy = model.builder_policy(plan)
    actions = sorted(a for s in policy["Statement"] for a in s["Action"])
    assert not [a for a in actions if a.startswith(("ec2:", "iam:", "sqs:", "autoscaling:"))]
    assert "s3:PutObject" in actions and "ecr:BatchGetImage" in actions
    assert json.dumps(policy).count(plan.submission_id) == 2  # its own documents and reports only


def test_gc_drops_only_our_stale_snapshots_never_a_mapped_one(aws_env, project: Path) -> None:
    aws, _ = aws_env
    from submitter import gc, tracking
    from submitter.aws.s3 import S3

    now = datetime.now(timezone.utc)
    digest = "sha256:" + "1" * 64
    older = _snapshot(aws, digest, now - timedelta(days=3))
    newest = _snapshot(aws, "sha256:" + "2" * 64, now - timedelta(days=1))
    foreign = _snapshot(aws, digest, now - timedelta(days=90), bucket="someone-else")
    other_job_old = _snapshot(aws, digest, now - timedelta(days=40), job="other")
    mapped_old = _snapshot(aws, digest, now - timedelta(days=50), job="mapped")
    aws.client("ec2").create_launch_template(
        LaunchTemplateName="submitter-mapped-1",
        LaunchTemplateData={"BlockDeviceMappings": [{"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": mapped_old}}]},
        TagSpecifications=[{"ResourceType": "launch-template",
                            "Tags": [{"Key": contract.TAG_SUBMISSION, "Value": "mapped-1"}]}])
    untagged = aws.client("ec2").create_snapshot(VolumeId=aws.client("ec2").create_volume(
        Size=1, AvailabilityZone=f"{REGION}a")["VolumeId"])["SnapshotId"]

    where = tracking.Where("cbucket", "p")
    s3 = S3.connect(aws, "cbucket")
    found = {o.id: o.why for o in gc.find(aws, s3, where, cache_max_age_days=30) if o.kind == cache.KIND}
    assert set(found) == {older, other_job_old}
    assert "newer cache" in found[older] and "older than 30" in found[other_job_old]
    assert not {newest, foreign, mapped_old, untagged} & set(found)
    removed = gc.remove(aws, gc.find(aws, s3, where, cache_max_age_days=30), print)
    assert {o.id for o in removed if o.kind == cache.KIND} == {older, other_job_old}
    left = {s["SnapshotId"] for s in aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert {newest, foreign, mapped_old, untagged} <= left and not {older, other_job_old} & left
    # An age of 0 days: every one of ours goes but the mapped one.
    found0 = {o.id for o in gc.find(aws, s3, where, cache_max_age_days=0) if o.kind == cache.KIND}
    assert found0 == {newest}
