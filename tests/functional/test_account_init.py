"""`init` and `doctor` against moto in-process: what init creates and how it is configured, that a second
init creates and changes nothing, and doctor's report."""

from __future__ import annotations

import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from submitter.account import doctor, init
from submitter.aws.session import Aws
from submitter.cli import app
from submitter.errors import UsageError
from submitter.settings import Settings

REGION = "eu-west-1"


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "SUBMITTER_SANDBOX", "SUBMITTER_BUCKET", "SUBMITTER_SSH_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield Aws(boto3.Session(region_name=REGION), REGION)


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(region=REGION, home=tmp_path / "home", ecr_repository=f"r-{uuid.uuid4().hex[:6]}", **extra)


def _init(aws: Aws, settings: Settings, cwd: Path, **kw: Any) -> tuple[init.InitPlan, list[str]]:
    plan = init.plan_init(aws, settings, cwd, **kw)
    return plan, init.apply_init(plan, lambda _t: None)


def _account_state(aws: Aws, bucket: str, repository: str) -> dict[str, Any]:
    """Everything init may touch, as AWS reports it (to compare before and after a second init)."""
    s3, ecr, ec2 = aws.client("s3"), aws.client("ecr"), aws.client("ec2")
    return {
        "buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"]),
        "pab": s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        "enc": s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"],
        "policy": s3.get_bucket_policy(Bucket=bucket)["Policy"],
        "lifecycle": s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
        "repos": [(r["repositoryName"], str(r["createdAt"])) for r in ecr.describe_repositories()["repositories"]],
        "keys": [(k["KeyName"], k["KeyPairId"]) for k in ec2.describe_key_pairs()["KeyPairs"]],
        "roles": [r["RoleName"] for r in aws.client("iam").list_roles()["Roles"]],
        "groups": sorted(g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]),
    }


def test_init_creates_a_private_encrypted_bucket_the_repository_and_a_key(aws: Aws, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    plan, done = _init(aws, settings, tmp_path, key_name="fkey", expire_days=30)
    account_id = aws.client("sts").get_caller_identity()["Account"]
    bucket = plan.bucket  # the random tail keeps the name from being taken first by whoever knows the account
    assert re.fullmatch(rf"submitter-{account_id}-{REGION}-[0-9a-f]{{8}}", bucket), bucket
    assert any(d.startswith("create S3 bucket") for d in done) and any("ECR repository" in d for d in done)

    s3 = aws.client("s3")
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == REGION
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    import json

    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert not [s for s in policy["Statement"] if s["Effect"] == "Allow"], "the policy grants nothing"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["submitter-expire-runs"]["Expiration"]["Days"] == 30
    assert rules["submitter-expire-runs"]["Filter"]["Prefix"] == "submitter/runs/"
    assert rules["submitter-abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7
    assert "submitter-expire-inputs" not in rules, "inputs are shared by later submissions: never expired"
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags == {"managed-by": "submitter"}

    (repo,) = aws.client("ecr").describe_repositories(repositoryNames=[settings.ecr_repository])["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE" and repo["imageScanningConfiguration"]["scanOnPush"]

    key = tmp_path / "home" / "keys" / "fkey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    (pair,) = aws.client("ec2").describe_key_pairs(KeyNames=["fkey"], IncludePublicKey=True)["KeyPairs"]
    assert pair["PublicKey"].split()[:2] == init.public_key_of(key).split()[:2]

    env = (tmp_path / ".env").read_text()
    for line in (f"SUBMITTER_BUCKET={bucket}", f"SUBMITTER_REGION={REGION}", "SUBMITTER_SSH_KEY=fkey",
                 f"SUBMITTER_ECR_REPOSITORY={settings.ecr_repository}"):
        assert line in env.splitlines()

    # Nothing per submission (role, security group) is made by init: those stay scoped to one submission.
    assert aws.client("iam").list_roles()["Roles"] == []
    assert [g["GroupName"] for g in aws.client("ec2").describe_security_groups()["SecurityGroups"]] == ["default"]


def test_a_second_init_creates_and_changes_nothing(aws: Aws, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first, _ = _init(aws, settings, tmp_path, key_name="fkey2")
    env_before = (tmp_path / ".env").read_text()
    key_before = (tmp_path / "home" / "keys" / "fkey2.pem").read_bytes()
    before = _account_state(aws, first.bucket, settings.ecr_repository)

    again = init.plan_init(aws, settings, tmp_path, key_name="fkey2")
    assert again.changes == [], [(s.kind, s.name, s.action) for s in again.changes]
    assert again.dotenv_changes() == {}
    assert init.apply_init(again, lambda _t: None) == []
    assert _account_state(aws, first.bucket, settings.ecr_repository) == before
    assert (tmp_path / ".env").read_text() == env_before
    assert (tmp_path / "home" / "keys" / "fkey2.pem").read_bytes() == key_before


def test_init_repairs_a_half_made_bucket_and_keeps_other_env_lines(aws: Aws, tmp_path: Path) -> None:
    """An init cut short after CreateBucket: the next one sets what is missing and nothing else."""
    aws.client("s3").create_bucket(Bucket="fhalf", CreateBucketConfiguration={"LocationConstraint": REGION})
    (tmp_path / ".env").write_text("WANDB_API_KEY=abc\nSUBMITTER_BUCKET=fhalf\n")
    settings = _settings(tmp_path, bucket="fhalf")
    plan = init.plan_init(aws, settings, tmp_path)
    actions = {(s.kind.strip(), s.action) for s in plan.steps}
    assert ("S3 bucket", "ok") in actions and ("bucket setting", "set") in actions
    init.apply_init(plan, lambda _t: None)
    assert aws.client("s3").get_public_access_block(Bucket="fhalf")["PublicAccessBlockConfiguration"]["BlockPublicAcls"]
    assert "WANDB_API_KEY=abc" in (tmp_path / ".env").read_text().splitlines()
    assert init.plan_init(aws, settings, tmp_path).changes == []


def test_a_key_pair_whose_private_key_is_elsewhere_is_an_error_with_the_fix(aws: Aws, tmp_path: Path) -> None:
    aws.client("ec2").create_key_pair(KeyName="fother")
    with pytest.raises(UsageError) as err:
        init.plan_init(aws, _settings(tmp_path), tmp_path, key_name="fother")
    assert "private key is not at" in err.value.what and "delete-key-pair" in (err.value.next_step or "")
    with pytest.raises(UsageError):
        init.plan_init(aws, _settings(tmp_path), tmp_path, key_name="../escape")


def test_init_command_shows_the_plan_asks_and_is_idempotent(aws: Aws, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUBMITTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SUBMITTER_REGION", REGION)
    refused = CliRunner().invoke(app, ["init"], input="n\n")
    assert refused.exit_code in (1, 2), refused.output
    assert "create  S3 bucket" in refused.output and "per submission" in refused.output
    assert not (tmp_path / ".env").exists(), "nothing is recorded when not confirmed"
    assert aws.client("s3").list_buckets()["Buckets"] == []

    first = CliRunner().invoke(app, ["init", "--yes"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, ["init", "--yes"])
    assert second.exit_code == 0, second.output
    assert "nothing to do" in second.output and "create " not in second.output


def test_doctor_reports_each_check_with_the_fix(aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, bucket="fdoc")
    checks = doctor.doctor(settings, aws, ["c5.large"], engine=None)
    by_name = {c.name: c for c in checks}
    assert by_name["credentials"].ok and "arn:aws" in by_name["credentials"].detail
    assert not by_name["bucket"].ok and "init" in by_name["bucket"].fix
    assert not by_name["repository"].ok and by_name["repository"].fix == "run `submitter init`"
    init.apply_init(init.plan_init(aws, settings, tmp_path), lambda _t: None)
    by_name = {c.name: c for c in doctor.doctor(settings, aws, ["c5.large"], engine=None)}
    assert by_name["bucket"].ok and by_name["repository"].ok
    assert "spot vCPU quota (standard)" in by_name

    def no_engine() -> Any:
        raise RuntimeError("no socket")

    (engine,) = [c for c in doctor.doctor(settings, None, [], no_engine) if c.name == "docker engine"]
    assert not engine.ok and "dockerd" in engine.fix


def test_quota_families() -> None:
    assert doctor.quota_family("c5.large") == "standard"
    assert doctor.quota_family("g4dn.xlarge") == "g"
    assert doctor.quota_family("p3.2xlarge") == "p"
    assert doctor.quota_family("inf2.xlarge") == "inf"
    assert os.sep  # keep the import used on every platform


def test_doctor_command_prints_ok_or_the_fix_per_check(aws: Aws, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUBMITTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SUBMITTER_REGION", REGION)
    monkeypatch.setenv("SUBMITTER_BUCKET", "fdoctor-missing")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("ok   credentials: arn:aws") for line in lines)
    assert any(line.startswith("FAIL bucket: fdoctor-missing does not exist") for line in lines)
    assert any(line.startswith("FAIL docker engine") for line in lines)
    fails = [i for i, line in enumerate(lines) if line.startswith("FAIL")]
    assert all(lines[i + 1].startswith("     fix: ") for i in fails), result.output
