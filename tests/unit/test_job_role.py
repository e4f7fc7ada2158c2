"""The spec's `permissions` as a job role: validation, the role's policy and trust, the instance role's one
extra statement, and the dry-run plan showing both policies."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from submitter import backends
from submitter.backends import job_role
from submitter.backends.pool import pool_plan
from submitter.errors import SpecError
from submitter.plan import PriceLookup, make_plan
from submitter.settings import Settings
from submitter.spec import load

NOW = datetime(2026, 11, 26, 7, 0, 0, tzinfo=timezone.utc)
BASE = f"""\
name: perm
command: [python, train.py]
image: {{uri: "123456789012.dkr.ecr.us-east-1.amazonaws.com/train@sha256:{'abc'.ljust(64, '0')}"}}
resources: {{instance_types: [c5.large]}}
"""
PERMISSIONS = """\
permissions:
  s3_read: ["s3://datasets/imagenet/", "s3://datasets/coco/val/"]
  s3_write: ["s3://team/wandb/"]
"""


def _plan(tmp_path: Path, text: str):
    (tmp_path / "job.yaml").write_text(text)
    return make_plan(load(tmp_path / "job.yaml"), Settings(bucket="bkt"), PriceLookup(None, "unknown"),
                     now=NOW, token="abc123", account="123456789012")


@pytest.mark.parametrize("value, message", [
    ('{s3_read: ["http://x/y"]}', "permissions.s3_read: 'http://x/y' is not an S3 URI"),
    ('{s3_write: ["s3://bk2/data/*"]}', "permissions.s3_write: 's3://bk2/data/*' is not an S3 URI"),
    ('{s3_read: ["s3://bk2/a/../other/"]}', "permissions.s3_read: 's3://bk2/a/../other/' is not an S3 URI"),
    ('{s3_read: ["s3://bk2/${*}/"]}', "permissions.s3_read: 's3://bk2/${*}/' is not an S3 URI"),
    ('{s3_read: "s3://bk2/"}', "permissions.s3_read: expected a list of S3 URIs"),
    ('{s3_read: ["s3://bk2/a/", "s3://bk2/a/"]}', "permissions.s3_read: lists a prefix twice"),
    ('{s3_read: [' + ", ".join(f'"s3://bk2/{i}/"' for i in range(21)) + "]}", "at most 20"),
    ('{s3_delete: ["s3://bk2/"]}', "permissions.s3_delete"),
])
def test_bad_permissions_name_the_field(tmp_path: Path, value: str, message: str) -> None:
    (tmp_path / "job.yaml").write_text(BASE + f"permissions: {value}\n")
    with pytest.raises(SpecError) as caught:
        load(tmp_path / "job.yaml")
    assert message in str(caught.value)
    assert "job.yaml:5" in str(caught.value)


def test_no_permissions_no_job_role_and_no_assume(tmp_path: Path) -> None:
    plan = _plan(tmp_path, BASE)
    pool = pool_plan(plan)
    assert pool.job_role is None
    assert pool.to_json()["job_role"] is None
    actions = [a for s in pool.iam_policy["Statement"] for a in s["Action"]]
    assert "sts:AssumeRole" not in actions


def test_job_role_policy_is_exactly_the_declared_prefixes(tmp_path: Path) -> None:
    plan = _plan(tmp_path, BASE + PERMISSIONS)
    role = job_role.describe(plan)
    assert role is not None
    sub = plan.submission_id
    assert role["RoleName"] == f"submitter-{sub}-job"
    assert role["Arn"] == f"arn:aws:iam::123456789012:role/submitter-{sub}-job"
    statements = {s["Sid"]: s for s in role["Policy"]["Statement"]}
    assert statements["ReadDeclaredPrefixes"]["Action"] == ["s3:GetObject"]
    assert statements["ReadDeclaredPrefixes"]["Resource"] == [
        "arn:aws:s3:::datasets/coco/val/*", "arn:aws:s3:::datasets/imagenet/*", "arn:aws:s3:::team/wandb/*"]
    assert statements["ListDeclaredPrefixes0"] == {
        "Sid": "ListDeclaredPrefixes0", "Effect": "Allow", "Action": ["s3:ListBucket"],
        "Resource": ["arn:aws:s3:::datasets"],
        "Condition": {"StringLike": {"s3:prefix": ["coco/val/*", "imagenet/*"]}}}
    assert statements["ListDeclaredPrefixes1"]["Resource"] == ["arn:aws:s3:::team"]
    assert statements["WriteDeclaredPrefixes"]["Action"] == ["s3:PutObject", "s3:AbortMultipartUpload"]
    assert statements["WriteDeclaredPrefixes"]["Resource"] == ["arn:aws:s3:::team/wandb/*"]
    everything = [a for s in role["Policy"]["Statement"] for a in s["Action"]]
    assert not [a for a in everything if not a.startswith("s3:")]
    assert "bkt" not in str(role["Policy"])  # the submitter bucket is the agent's, never the job's
    # Trust: the submission's own instance role and nothing else.
    assert role["AssumeRolePolicyDocument"]["Statement"] == [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::123456789012:role/submitter-{sub}"},
        "Action": "sts:AssumeRole"}]


def test_instance_role_may_assume_only_its_job_role(tmp_path: Path) -> None:
    plan = _plan(tmp_path, BASE + PERMISSIONS)
    pool = pool_plan(plan)
    assumes = [s for s in pool.iam_policy["Statement"] if "sts:AssumeRole" in s["Action"]]
    assert assumes == [{"Sid": "AssumeJobRole", "Effect": "Allow", "Action": ["sts:AssumeRole"],
                        "Resource": [f"arn:aws:iam::123456789012:role/submitter-{plan.submission_id}-job"]}]


def test_dry_run_plan_shows_both_policies(tmp_path: Path) -> None:
    shown = backends.dry_run(_plan(tmp_path, BASE + PERMISSIONS))
    assert shown["iam_policy"]["Statement"]
    assert shown["job_role"]["Policy"]["Statement"]
    assert shown["job_role"]["AssumeRolePolicyDocument"]["Statement"][0]["Action"] == "sts:AssumeRole"


def test_job_role_name_never_collides_with_an_instance_role() -> None:
    long_id = "a" * 40 + "-20261126-070000-abc123"
    assert len(job_role.name(long_id)) <= 64
    assert job_role.name(long_id) != f"submitter-{long_id}"[:64]


def test_dry_run_summary_names_the_job_role_or_says_there_is_none(tmp_path: Path) -> None:
    plan = _plan(tmp_path, BASE + PERMISSIONS)
    assert (f"job role: submitter-{plan.submission_id}-job, reads 3 S3 prefix(es), writes 1"
            in backends.for_plan(plan).summary(plan))
    plan = _plan(tmp_path, BASE)
    assert "job role: none (the container gets no AWS credentials)" in backends.for_plan(plan).summary(plan)


def test_on_batch_the_declared_prefixes_join_the_job_definitions_role(tmp_path: Path) -> None:
    from submitter.backends.batch import job

    plan = _plan(tmp_path, BASE + PERMISSIONS)
    sids = [s["Sid"] for s in job.job_role_policy(plan)["Statement"]]
    assert {"ReadDeclaredPrefixes", "WriteDeclaredPrefixes"} <= set(sids) and len(sids) == len(set(sids))
    plain = _plan(tmp_path, BASE)
    assert "ReadDeclaredPrefixes" not in str(job.job_role_policy(plain))
