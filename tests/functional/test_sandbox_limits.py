"""The sandbox's AWS limits (submitter/sandbox/limits.py) against moto in-process, through boto3: each limit is
refused with AWS's error code, and a value just under it is accepted."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from submitter.aws import limits as aws
from submitter.sandbox import limits

REGION = "us-east-1"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@pytest.fixture()
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    """moto in-process with the sandbox's limits installed; they are taken out again after the test."""
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        uninstall = limits.install()
        try:
            yield boto3.Session(region_name=REGION)
        finally:
            uninstall()


def _error(call: Callable[[], Any]) -> tuple[str, str]:
    """(code, message) of the refusal, or ("OK", "") when the call is accepted."""
    try:
        call()
    except ClientError as err:
        return str(err.response["Error"]["Code"]), str(err.response["Error"].get("Message", ""))
    return "OK", ""


def _code(call: Callable[[], Any]) -> str:
    return _error(call)[0]


def _tags(count: int, key: str = "k", value: str = "v") -> list[dict[str, str]]:
    return [{"Key": f"{key}{i}" if count > 1 else key, "Value": value} for i in range(count)]


# EC2 ---------------------------------------------------------------------------------------------------------


def _image(ec2: Any) -> str:
    return str(ec2.describe_images()["Images"][0]["ImageId"])


def test_user_data_over_16_kib_raw_is_refused_as_ec2_does(session: boto3.Session) -> None:
    ec2 = session.client("ec2")
    image = _image(ec2)
    run = lambda data: ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, UserData=data)  # noqa: E731
    assert _code(lambda: run("x" * aws.USER_DATA_BYTES)) == "OK"  # 16 KiB raw is 21,848 base64 characters: fine
    assert _error(lambda: run("x" * (aws.USER_DATA_BYTES + 1))) == (
        "InvalidParameterValue", "User data is limited to 16384 bytes")


def test_launch_template_user_data_over_16_kib_is_refused(session: boto3.Session) -> None:
    ec2 = session.client("ec2")
    data = lambda size: {"UserData": base64.b64encode(b"x" * size).decode()}  # noqa: E731
    assert _code(lambda: ec2.create_launch_template(
        LaunchTemplateName="fits", LaunchTemplateData=data(aws.USER_DATA_BYTES))) == "OK"
    assert _code(lambda: ec2.create_launch_template(
        LaunchTemplateName="too-big", LaunchTemplateData=data(aws.USER_DATA_BYTES + 1))) == "InvalidParameterValue"
    assert _code(lambda: ec2.create_launch_template_version(
        LaunchTemplateName="fits", LaunchTemplateData=data(aws.USER_DATA_BYTES + 1))) == "InvalidParameterValue"


def test_launch_template_names_follow_ec2s_rules(session: boto3.Session) -> None:
    ec2 = session.client("ec2")
    create = lambda name: ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={})  # noqa: E731
    assert _code(lambda: create("a" * 128)) == "OK"
    assert _code(lambda: create("ok(1)./_-x")) == "OK"
    for bad in ("a" * 129, "has space", "colon:no"):
        assert _code(lambda: create(bad)) == "InvalidLaunchTemplateName.MalformedException", bad  # noqa: B023


def test_ec2_tags_key_value_and_reserved_prefix(session: boto3.Session) -> None:
    ec2 = session.client("ec2")
    image = _image(ec2)

    def run(tags: list[dict[str, str]]) -> Any:
        return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])

    assert _code(lambda: run(_tags(1, "k" * 128, "v" * 256) + _tags(49, "n"))) == "OK"
    assert _code(lambda: run(_tags(1, "k" * 129))) == "InvalidParameterValue"
    assert _code(lambda: run(_tags(1, "k", "v" * 257))) == "InvalidParameterValue"
    assert _error(lambda: run(_tags(1, "aws:owner"))) == (
        "InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
    assert _code(lambda: run(_tags(51, "n"))) == "TagLimitExceeded"  # moto's own count
    assert _code(lambda: ec2.create_tags(Resources=[image], Tags=_tags(1, "AWS:x"))) == "InvalidParameterValue"


def test_security_group_and_repository_names(session: boto3.Session) -> None:
    ec2, ecr = session.client("ec2"), session.client("ecr")
    create = lambda name: ec2.create_security_group(GroupName=name, Description="d")  # noqa: E731
    assert _code(lambda: create("g" * 255)) == "OK"
    assert _code(lambda: create("submitter ssh (S-1) #2")) == "OK"
    for bad in ("g" * 256, "sg-123", "tab\there", "ümlaut"):
        assert _code(lambda: create(bad)) == "InvalidParameterValue", bad  # noqa: B023
    assert _code(lambda: ec2.create_security_group(GroupName="tagged", Description="d", TagSpecifications=[
        {"ResourceType": "security-group", "Tags": _tags(1, "aws:x")}])) == "InvalidParameterValue"
    assert _code(lambda: ecr.create_repository(repositoryName="r" * 256)) == "OK"
    assert _code(lambda: ecr.create_repository(repositoryName="r" * 257)) == "InvalidParameterException"


# SQS ---------------------------------------------------------------------------------------------------------


def test_sqs_message_over_the_queue_maximum_counted_in_bytes_with_attributes(session: boto3.Session) -> None:
    sqs = session.client("sqs")
    small = sqs.create_queue(QueueName="small", Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    assert _code(lambda: sqs.send_message(QueueUrl=small, MessageBody="x" * 1024)) == "OK"
    assert _error(lambda: sqs.send_message(QueueUrl=small, MessageBody="é" * 600)) == (  # 600 chars, 1,200 bytes
        "InvalidParameterValue", "One or more parameters are invalid. Reason: Message must be shorter than 1024 bytes.")
    attribute = {"run": {"DataType": "String", "StringValue": "y" * 100}}
    assert _code(lambda: sqs.send_message(QueueUrl=small, MessageBody="x" * 1000,
                                          MessageAttributes=attribute)) == "InvalidParameterValue"
    default = sqs.create_queue(QueueName="default")["QueueUrl"]
    assert _code(lambda: sqs.send_message(QueueUrl=default, MessageBody="x" * aws.SQS_MESSAGE_BYTES_MAX)) == "OK"
    assert _code(lambda: sqs.send_message(QueueUrl=default, MessageBody="é" * (aws.SQS_MESSAGE_BYTES_MAX // 2 + 1))
                 ) == "InvalidParameterValue"


def test_sqs_batch_entries_and_total_size(session: boto3.Session) -> None:
    sqs = session.client("sqs")
    url = sqs.create_queue(QueueName="batch")["QueueUrl"]
    entries = lambda count, size: [{"Id": str(i), "MessageBody": "é" * size} for i in range(count)]  # noqa: E731
    assert _code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=entries(10, 50_000))) == "OK"  # 1,000,000 B
    assert _code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=entries(11, 1))).endswith(
        "TooManyEntriesInBatchRequest")
    # 10 x 60,000 characters is 600,000 characters (moto let it through) but 1,200,000 bytes
    assert _code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=entries(10, 60_000))).endswith(
        "BatchRequestTooLong")


def test_sqs_queue_names_and_tags(session: boto3.Session) -> None:
    sqs = session.client("sqs")
    assert _code(lambda: sqs.create_queue(QueueName="q" * 80)) == "OK"
    assert _code(lambda: sqs.create_queue(QueueName="q" * 81)) == "InvalidParameterValue"  # moto's own
    assert _code(lambda: sqs.create_queue(QueueName="q.dot")) == "InvalidParameterValue"  # moto's own
    fifty = {f"k{i}": "v" for i in range(50)}
    assert _code(lambda: sqs.create_queue(QueueName="tagged", tags=fifty)) == "OK"
    assert _code(lambda: sqs.create_queue(QueueName="t51", tags={**fifty, "one": "more"})) == "InvalidParameterValue"
    assert _code(lambda: sqs.create_queue(QueueName="taws", tags={"aws:x": "v"})) == "InvalidParameterValue"
    assert _code(lambda: sqs.create_queue(QueueName="tkey", tags={"k" * 129: "v"})) == "InvalidParameterValue"
    url = sqs.get_queue_url(QueueName="tagged")["QueueUrl"]
    assert _code(lambda: sqs.tag_queue(QueueUrl=url, Tags={"k": "v" * 257})) == "InvalidParameterValue"


# IAM ---------------------------------------------------------------------------------------------------------


def test_iam_names_length_and_characters(session: boto3.Session) -> None:
    iam = session.client("iam")
    assert _code(lambda: iam.create_role(RoleName="r" * 64, AssumeRolePolicyDocument=TRUST)) == "OK"
    code, message = _error(lambda: iam.create_role(RoleName="r" * 65, AssumeRolePolicyDocument=TRUST))
    assert code == "ValidationError" and "at 'roleName'" in message and "less than or equal to 64" in message
    assert _code(lambda: iam.create_role(RoleName="has space", AssumeRolePolicyDocument=TRUST)) == "ValidationError"
    assert _code(lambda: iam.create_instance_profile(InstanceProfileName="p" * 128)) == "OK"
    assert _code(lambda: iam.create_instance_profile(InstanceProfileName="p" * 129)) == "ValidationError"
    assert _code(lambda: iam.create_instance_profile(InstanceProfileName="p!")) == "ValidationError"
    assert _code(lambda: iam.put_role_policy(RoleName="r" * 64, PolicyName="n" * 129,
                                             PolicyDocument=_policy(10))) == "ValidationError"


def _policy(size: int, action: str = "s3:GetObject") -> str:
    """A policy document of exactly `size` characters once whitespace is taken out, laid out with whitespace."""
    def text(padding: int) -> str:
        return json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": action, "Resource": "arn:aws:s3:::b/" + "k" * padding}]}, indent=4)
    base = aws.policy_chars(text(0))
    return text(size - base)


def test_iam_inline_policies_of_a_role_together_at_most_10240(session: boto3.Session) -> None:
    iam = session.client("iam")
    iam.create_role(RoleName="worker", AssumeRolePolicyDocument=TRUST)
    put = lambda name, size: iam.put_role_policy(RoleName="worker", PolicyName=name,  # noqa: E731
                                                PolicyDocument=_policy(size))
    assert _code(lambda: put("one", 6000)) == "OK"
    assert _code(lambda: put("two", aws.IAM_ROLE_INLINE_CHARS - 6000)) == "OK"  # exactly 10,240 together
    assert _code(lambda: put("two", aws.IAM_ROLE_INLINE_CHARS - 6000)) == "OK"  # replacing itself: not counted twice
    assert _error(lambda: put("three", 200)) == (
        "LimitExceeded", "Maximum policy size of 10240 bytes exceeded for role worker")
    assert _code(lambda: put("one", 6001)) == "LimitExceeded"


def test_iam_trust_policy_and_tags(session: boto3.Session) -> None:
    iam = session.client("iam")
    trust = lambda size: _policy(size, "sts:AssumeRole")  # noqa: E731
    assert _code(lambda: iam.create_role(RoleName="trusted", AssumeRolePolicyDocument=trust(2048))) == "OK"
    assert _error(lambda: iam.create_role(RoleName="trusting", AssumeRolePolicyDocument=trust(2049))) == (
        "LimitExceeded", "Cannot exceed quota for ACLSizePerRole: 2048")
    assert _code(lambda: iam.create_role(RoleName="t1", AssumeRolePolicyDocument=TRUST, Tags=_tags(50, "n"))) == "OK"
    assert _code(lambda: iam.create_role(RoleName="t2", AssumeRolePolicyDocument=TRUST,
                                         Tags=_tags(1, "aws:x"))) == "ValidationError"
    assert _code(lambda: iam.create_instance_profile(InstanceProfileName="p1", Tags=_tags(51, "n"))
                 ) == "ValidationError"
    assert _code(lambda: iam.create_instance_profile(InstanceProfileName="p2", Tags=_tags(1, "k" * 129))
                 ) == "ValidationError"
    assert _code(lambda: iam.tag_instance_profile(InstanceProfileName="absent", Tags=_tags(1))) == "NoSuchEntity"


# Auto Scaling ------------------------------------------------------------------------------------------------


def test_auto_scaling_at_most_40_overrides_and_50_tags(session: boto3.Session) -> None:
    ec2, autoscaling = session.client("ec2"), session.client("autoscaling")
    ec2.create_launch_template(LaunchTemplateName="asg-lt", LaunchTemplateData={"ImageId": _image(ec2)})
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]

    def create(name: str, overrides: int, tags: list[dict[str, Any]] | None = None) -> Any:
        policy = {"LaunchTemplate": {
            "LaunchTemplateSpecification": {"LaunchTemplateName": "asg-lt", "Version": "$Latest"},
            "Overrides": [{"InstanceType": "c5.large"} for _ in range(overrides)]}}
        return autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=0, MaxSize=0, VPCZoneIdentifier=subnet, MixedInstancesPolicy=policy,
            Tags=tags or [])

    assert _code(lambda: create("forty", 40)) == "OK"
    code, message = _error(lambda: create("forty-one", 41))
    assert code == "ValidationError" and "less than or equal to 40" in message
    assert _code(lambda: autoscaling.update_auto_scaling_group(AutoScalingGroupName="forty", DesiredCapacity=0)) == "OK"
    too_many = {"LaunchTemplate": {
        "LaunchTemplateSpecification": {"LaunchTemplateName": "asg-lt", "Version": "$Latest"},
        "Overrides": [{"InstanceType": "c5.large"} for _ in range(41)]}}
    assert _code(lambda: autoscaling.update_auto_scaling_group(
        AutoScalingGroupName="forty", MixedInstancesPolicy=too_many)) == "ValidationError"
    tags = lambda count, key="n": [{**t, "PropagateAtLaunch": True} for t in _tags(count, key)]  # noqa: E731
    assert _code(lambda: create("fifty", 1, tags(50))) == "OK"
    assert _code(lambda: create("fifty-one", 1, tags(51))) == "LimitExceeded"
    assert _code(lambda: create("reserved", 1, tags(1, "aws:x"))) == "ValidationError"


# S3 ----------------------------------------------------------------------------------------------------------


def test_s3_keys_over_1024_bytes(session: boto3.Session) -> None:
    s3 = session.client("s3")
    s3.create_bucket(Bucket="limits-bucket")
    put = lambda key: s3.put_object(Bucket="limits-bucket", Key=key, Body=b"x")  # noqa: E731
    assert _code(lambda: put("k" * 1024)) == "OK"
    assert _code(lambda: put("é" * 512)) == "OK"  # 512 characters, 1,024 bytes
    assert _error(lambda: put("é" * 513)) == ("KeyTooLongError", "Your key is too long")
    assert _code(lambda: s3.create_multipart_upload(Bucket="limits-bucket", Key="k" * 1025)) == "KeyTooLongError"
    copy = lambda key: s3.copy_object(Bucket="limits-bucket", Key=key,  # noqa: E731
                                      CopySource={"Bucket": "limits-bucket", "Key": "k" * 1024})
    assert _code(lambda: copy("c" * 1024)) == "OK"
    assert _code(lambda: copy("c" * 1025)) == "KeyTooLongError"


# SSM ---------------------------------------------------------------------------------------------------------


def test_ssm_parameter_name_levels_and_value_size(session: boto3.Session) -> None:
    ssm = session.client("ssm")
    put = lambda name, value="v", **extra: ssm.put_parameter(  # noqa: E731
        Name=name, Value=value, Type="SecureString", **extra)
    assert _code(lambda: put("/" + "/".join(f"l{i}" for i in range(15)))) == "OK"
    assert _code(lambda: put("/" + "/".join(f"l{i}" for i in range(16)))) == "HierarchyLevelLimitExceededException"
    arn_prefix = len(f"arn:aws:ssm:{REGION}:123456789012:parameter/")
    assert _code(lambda: put("/" + "n" * (aws.SSM_NAME_CHARS - arn_prefix))) == "OK"
    assert _code(lambda: put("/" + "m" * (aws.SSM_NAME_CHARS - arn_prefix + 1))) == "ValidationException"
    assert _code(lambda: put("/v/standard", "x" * aws.SSM_STANDARD_VALUE_BYTES)) == "OK"
    code, message = _error(lambda: put("/v/too-big", "x" * (aws.SSM_STANDARD_VALUE_BYTES + 1)))
    assert code == "ValidationException" and message.startswith("Standard tier parameters support a maximum")
    assert _code(lambda: put("/v/advanced", "x" * 8192, Tier="Advanced")) == "OK"
    assert _code(lambda: put("/v/advanced-big", "x" * 8193, Tier="Advanced")) == "ValidationException"
    assert _code(lambda: put("/t/fifty", Tags=_tags(50, "n"))) == "OK"
    assert _code(lambda: put("/t/fifty-one", Tags=_tags(51, "n"))) == "TooManyTagsError"
    assert _code(lambda: put("/t/reserved", Tags=_tags(1, "aws:x"))) == "ValidationException"


def test_uninstall_puts_moto_back(session: boto3.Session) -> None:
    from moto.iam.models import IAMBackend

    patched = IAMBackend.create_role
    limits.install()()  # a second install and its removal leave the first in place
    assert IAMBackend.create_role is patched
