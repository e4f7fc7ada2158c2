"""The sandbox's IAM enforcement (submitter/sandbox/iam.py) against moto in-process: the administrator may do
anything, an instance acts as its own role with the credentials IMDS would serve, and the instance role's real
policy (the plan's) is what decides: its own run, yes; the runtime artefact or another submission, AccessDenied."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from submitter.backends.pool import pool_plan
from submitter.plan import PriceLookup, make_plan
from submitter.sandbox import iam
from submitter.settings import Settings
from submitter.spec import load, submission_id

REGION = "us-east-1"
NOW = datetime(2026, 11, 26, 7, 0, 0, tzinfo=timezone.utc)
TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


@pytest.fixture()
def enforcing(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[boto3.Session, str]]:
    """moto in-process with the sandbox's IAM: (administrator session, account). Everything is put back after."""
    from moto import mock_aws
    from moto import settings as moto_settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMPolicyStatement

    for name in ("_match", "_check_element_matches", "_check_principal"):
        monkeypatch.setattr(IAMPolicyStatement, name, IAMPolicyStatement.__dict__[name])
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", moto_settings.INITIAL_NO_AUTH_ACTION_COUNT)
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", ActionAuthenticatorMixin.request_count)
    monkeypatch.setattr(ActionAuthenticatorMixin, "_authenticate_and_authorize_normal_action",
                        ActionAuthenticatorMixin._authenticate_and_authorize_normal_action)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        iam.install()
        key, secret = iam.create_admin(DEFAULT_ACCOUNT_ID)
        iam.enforce()
        yield boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION), \
            DEFAULT_ACCOUNT_ID


def _plan(tmp_path: Path, name: str = "exp1", token: str = "abc123"):
    directory = tmp_path / f"{name}-{token}"
    directory.mkdir()
    (directory / "Dockerfile.train").write_text("FROM python:3.11-slim\n")
    (directory / "job.yaml").write_text(f"name: {name}\ncommand: [python, train.py]\n"
                                        "resources: {instance_types: [c5.large]}\nsweep: {LR: [1, 2, 3]}\n")
    return make_plan(load(directory / "job.yaml"), Settings(bucket="sbkt", prefix="p"),  # type: ignore[arg-type]
                     PriceLookup(None, "unknown"), now=NOW, token=token)


def _instance_session(admin: boto3.Session, account: str, plan: Any) -> boto3.Session:
    """What the instance's AWS CLI gets from IMDS: credentials of the role its instance profile names."""
    pool = pool_plan(plan)
    client = admin.client("iam")
    client.create_role(RoleName=pool.names.role, AssumeRolePolicyDocument=json.dumps(TRUST))
    client.put_role_policy(RoleName=pool.names.role, PolicyName="submitter",
                           PolicyDocument=json.dumps(pool.iam_policy))
    issued = iam.RoleCredentials(account, REGION, "i-0123456789abcdef0")(pool.names.role)
    return boto3.Session(aws_access_key_id=issued["AccessKeyId"], aws_secret_access_key=issued["SecretAccessKey"],
                         aws_session_token=issued["Token"], region_name=REGION)


def _code(call: Any) -> str:
    try:
        call()
    except ClientError as err:
        return str(err.response["Error"]["Code"])
    return "OK"


def test_the_instance_acts_as_its_role_and_its_policy_decides(enforcing, tmp_path: Path) -> None:
    admin, account = enforcing
    admin.client("s3").create_bucket(Bucket="sbkt")
    plan = _plan(tmp_path)
    # A job named after ours: under the old `runs/SUB*` its runs were ours too.
    other = _plan(tmp_path, name=submission_id("exp1", NOW, "abc123") + "-x", token="def456")
    s3 = _instance_session(admin, account, plan).client("s3")
    layout, run = plan.layout, plan.runs[2].run_id

    def put(key: str) -> str:
        return _code(lambda: s3.put_object(Bucket="sbkt", Key=key, Body=b"{}"))

    assert put(layout.status(run)) == "OK"
    assert put(layout.outputs(run) + "model.pt") == "OK"
    assert put(layout.instance_report(plan.submission_id, "i-0123456789abcdef0")) == "OK"
    assert put(layout.runtime(plan.submission_id)) == "AccessDenied"
    assert put(layout.submission_doc(plan.submission_id)) == "AccessDenied"
    assert put(layout.run_cancel(run)) == "AccessDenied"
    assert put(layout.status(other.runs[0].run_id)) == "AccessDenied"
    assert put(layout.status(_plan(tmp_path, token="0f0f0f").runs[0].run_id)) == "AccessDenied"
    admin.client("s3").put_object(Bucket="sbkt", Key=layout.submission_doc(other.submission_id), Body=b"{}")
    assert _code(lambda: s3.get_object(Bucket="sbkt", Key=layout.submission_doc(other.submission_id))) \
        == "AccessDenied"
    # Services whose resource moto does not name are judged on the action: allowed ones pass, others do not.
    session = _instance_session(admin, account, _plan(tmp_path, token="1a1a1a"))
    assert _code(lambda: session.client("ec2").describe_spot_price_history(MaxResults=1)) == "OK"
    assert _code(lambda: session.client("ec2").describe_instances()) != "OK"
    assert _code(lambda: session.client("iam").list_roles()) != "OK"


def test_the_administrator_may_do_anything_and_an_unknown_key_nothing(enforcing) -> None:
    admin, _ = enforcing
    assert admin.client("sts").get_caller_identity()["Arn"].endswith(f":user/{iam.ADMIN_USER}")
    assert _code(lambda: admin.client("s3").create_bucket(Bucket="adminbkt")) == "OK"
    stranger = boto3.Session(aws_access_key_id="AKIA" + "X" * 16, aws_secret_access_key="x", region_name=REGION)
    assert _code(lambda: stranger.client("s3").list_buckets()) == "InvalidAccessKeyId"


def test_role_credentials_are_renewed_before_they_expire(enforcing) -> None:
    _, account = enforcing
    credentials = iam.RoleCredentials(account, REGION, "i-0123456789abcdef0", duration=iam.REFRESH_BEFORE_S + 60)
    first = credentials("r")
    assert credentials("r")["AccessKeyId"] == first["AccessKeyId"]  # still well before expiry: the same keys
    short = iam.RoleCredentials(account, REGION, "i-0123456789abcdef0", duration=iam.REFRESH_BEFORE_S - 60)
    assert short("r")["AccessKeyId"] != short("r")["AccessKeyId"]  # within the refresh window: new keys


def test_iam_wildcards_and_principals_as_aws_reads_them() -> None:
    assert iam.matches("arn:aws:s3:::b/runs/S-?/*", "arn:aws:s3:::b/runs/S-7/status.json")
    assert not iam.matches("arn:aws:s3:::b/runs/S-?/*", "arn:aws:s3:::b/runs/S/status.json")  # moto: `-?` regex
    assert not iam.matches("arn:aws:s3:::b.c/*", "arn:aws:s3:::bxc/k")  # `.` is literal
    names = iam._principals("arn:aws:sts::123456789012:assumed-role/worker/i-0abc")
    assert "arn:aws:iam::123456789012:role/worker" in names


def test_credentials_of_a_deleted_role_are_refused_with_403_not_an_internal_error(enforcing, tmp_path: Path) -> None:
    admin, account = enforcing
    admin.client("s3").create_bucket(Bucket="gonebkt")
    plan = _plan(tmp_path, token="dead00")
    worker = _instance_session(admin, account, plan)
    assert _code(lambda: worker.client("s3").head_bucket(Bucket="gonebkt")) != "InvalidAccessKeyId"
    assert _code(lambda: worker.client("sqs").create_queue(QueueName="not-its-own")) == "AccessDenied"  # JSON too
    role = pool_plan(plan).names.role
    admin.client("iam").delete_role_policy(RoleName=role, PolicyName="submitter")
    admin.client("iam").delete_role(RoleName=role)
    # moto looked the role up while evaluating the request and answered 500 (NoSuchEntity in its log); and it
    # wrote the error as XML, which a JSON-protocol client (SQS, SSM, ECR) read as a bare 403 without a code.
    for call, code in ((lambda: worker.client("sts").get_caller_identity(), "InvalidClientTokenId"),
                       (lambda: worker.client("sqs").list_queues(), "InvalidClientTokenId"),
                       (lambda: worker.client("ssm").get_parameter(Name="/x"), "InvalidClientTokenId"),
                       (lambda: worker.client("s3").list_objects_v2(Bucket="gonebkt"), "InvalidAccessKeyId")):
        try:
            call()
        except ClientError as err:
            assert (err.response["Error"]["Code"], err.response["ResponseMetadata"]["HTTPStatusCode"]) == (code, 403)
        else:
            raise AssertionError("a deleted role's credentials were accepted")


def test_who_ended_an_instance_is_in_the_log(enforcing, caplog: pytest.LogCaptureFixture) -> None:
    """TerminateInstances and the group calls that may end instances are logged with the caller's access key."""
    admin, _ = enforcing
    ec2 = admin.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    with caplog.at_level("INFO", logger=iam.log.name):
        ec2.describe_instances(InstanceIds=[iid])
        ec2.terminate_instances(InstanceIds=[iid])
    key = admin.get_credentials().access_key
    assert [r.getMessage() for r in caplog.records if "audit" in r.getMessage()] == [
        f"audit: TerminateInstances by {key} {{'InstanceId.1': ['{iid}']}}"]
