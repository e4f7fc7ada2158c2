"""The spec's `permissions` against moto in-process: the pool creates the job role with the instance role
(trust: that role only; policy: the declared prefixes), the runtime learns its ARN from submission.json, the
launch template keeps IMDS from the container, and clean-up removes both roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from submitter import execute
from submitter.aws.session import Aws
from submitter.backends import job_role
from submitter.backends.pool import PoolBackend, pool_plan
from submitter.progress import NullProgress
from submitter.settings import Settings
from submitter.spec import load

REGION = "us-east-1"
SPEC = """\
name: fperm
image:
  uri: {uri}
command: [python, train.py]
resources:
  instance_types: [c5.large]
"""
PERMISSIONS = """\
permissions:
  s3_read: ["s3://fdatasets/imagenet/"]
  s3_write: ["s3://fteam/wandb/"]
"""


@pytest.fixture()
def aws_env(moto_account):
    with moto_account("fjbucket", "train") as (session, uri):
        yield Aws(session, REGION), uri


def _submit(aws: Aws, tmp_path: Path, uri: str, text: str):
    (tmp_path / "job.yaml").write_text(text.format(uri=f"{uri}:v1"))
    settings = Settings(bucket="fjbucket", region=REGION, prefix="p")
    (sub,) = execute.submit(aws, settings, [load(tmp_path / "job.yaml")], {}, tmp_path, NullProgress(),
                            engine=lambda: None)
    return sub.plan


def _document(aws: Aws, plan) -> dict:
    key = plan.layout.submission_doc(plan.submission_id)
    return json.loads(aws.session.client("s3").get_object(Bucket="fjbucket", Key=key)["Body"].read())


def test_permissions_become_a_job_role_only_the_instance_role_may_assume(aws_env, tmp_path: Path) -> None:
    aws, uri = aws_env
    plan = _submit(aws, tmp_path, uri, SPEC + PERMISSIONS)
    pool = pool_plan(plan)
    iam = aws.session.client("iam")
    name = job_role.name(plan.submission_id)

    role = iam.get_role(RoleName=name)["Role"]
    instance_role_arn = iam.get_role(RoleName=pool.names.role)["Role"]["Arn"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"AWS": instance_role_arn}, "Action": "sts:AssumeRole"}]
    policy = iam.get_role_policy(RoleName=name, PolicyName="submitter-run")["PolicyDocument"]
    resources = sorted(r for s in policy["Statement"] for r in s["Resource"])
    assert resources == ["arn:aws:s3:::fdatasets", "arn:aws:s3:::fdatasets/imagenet/*", "arn:aws:s3:::fteam",
                         "arn:aws:s3:::fteam/wandb/*", "arn:aws:s3:::fteam/wandb/*"]
    tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=name)["Tags"]}
    assert tags == plan.tags  # found and removed by gc like the instance role
    # The instance role may assume it (and no other role); the runtime finds it in submission.json.
    instance_policy = iam.get_role_policy(RoleName=pool.names.role, PolicyName="submitter-run")["PolicyDocument"]
    assume = [s for s in instance_policy["Statement"] if s["Action"] == ["sts:AssumeRole"]]
    assert [s["Resource"] for s in assume] == [[role["Arn"]]]
    assert _document(aws, plan)["job_role_arn"] == role["Arn"]
    # IMDS stays out of the container's reach: the token answer cannot cross the docker bridge.
    data = aws.session.client("ec2").describe_launch_template_versions(
        LaunchTemplateName=pool.names.launch_template)["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1

    removed = PoolBackend().clean_up(aws, plan.submission_id)
    assert f"role {name}" in removed and f"role {pool.names.role}" in removed
    assert [r["RoleName"] for r in iam.list_roles()["Roles"] if plan.submission_id in r["RoleName"]] == []


def test_a_retried_submit_keeps_one_job_role(aws_env, tmp_path: Path) -> None:
    aws, uri = aws_env
    plan = _submit(aws, tmp_path, uri, SPEC + PERMISSIONS)
    settings = Settings(bucket="fjbucket", region=REGION, prefix="p")
    execute.submit(aws, settings, [load(tmp_path / "job.yaml")], {}, tmp_path, NullProgress(),
                   engine=lambda: None, submission=plan.submission_id)
    names = [r["RoleName"] for r in aws.session.client("iam").list_roles()["Roles"]]
    assert names.count(job_role.name(plan.submission_id)) == 1


def test_no_permissions_no_job_role_and_none_in_the_document(aws_env, tmp_path: Path) -> None:
    aws, uri = aws_env
    plan = _submit(aws, tmp_path, uri, SPEC)
    names = [r["RoleName"] for r in aws.session.client("iam").list_roles()["Roles"]]
    assert job_role.name(plan.submission_id) not in names
    assert _document(aws, plan)["job_role_arn"] is None


def test_gc_removes_the_job_role_of_a_finished_submission(aws_env, tmp_path: Path) -> None:
    from submitter import gc, tracking
    from submitter.aws.s3 import S3

    aws, uri = aws_env
    plan = _submit(aws, tmp_path, uri, SPEC + PERMISSIONS)
    where = tracking.Where("fjbucket", "p")
    s3 = S3(aws.client("s3"), "fjbucket")
    for run in plan.runs:
        s3.put_json(where.layout.status(run.run_id), {"run_id": run.run_id, "state": "succeeded"})
    roles = [o for o in gc.find(aws, s3, where) if o.kind == "role"]
    assert sorted(o.id for o in roles) == sorted([pool_plan(plan).names.role, job_role.name(plan.submission_id)])
    gc.remove(aws, roles, lambda _: None)
    names = [r["RoleName"] for r in aws.session.client("iam").list_roles()["Roles"]]
    assert [n for n in names if plan.submission_id in n] == []
