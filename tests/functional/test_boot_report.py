"""A host that cannot get the AWS CLI still reports why it gave up and leaves its group: the real boot script,
on a host of links without `aws` (tests/unit/test_boot_tools.py), reports through the standard-library
reporter to moto (a threaded server, as the sandbox runs it), and its Auto Scaling group shrinks, so no
replacement boots into the same failure; `status` then finds the reason (backends/pool/stranded.py)."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from submitter import contract
from submitter.sandbox.imds import Imds, InstanceMeta

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from boot_host import TOOLS, Host, render  # noqa: E402  (the same host of links as the unit tier)

REGION = "us-east-1"
BUCKET = "boot-reports"
GROUP = "submitter-s-1"


@pytest.fixture()
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _client(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def test_a_host_without_the_cli_reports_to_s3_and_leaves_its_group(tmp_path: Path, moto_server: str) -> None:
    s3, asg, ec2 = (_client(moto_server, s) for s in ("s3", "autoscaling", "ec2"))
    s3.create_bucket(Bucket=BUCKET)
    ec2.create_launch_template(LaunchTemplateName=GROUP, LaunchTemplateData={"ImageId": "ami-12c6146b",
                                                                         "InstanceType": "c5.large"})
    asg.create_auto_scaling_group(AutoScalingGroupName=GROUP, MinSize=0, MaxSize=2, DesiredCapacity=1,
                                  LaunchTemplate={"LaunchTemplateName": GROUP}, AvailabilityZones=["us-east-1a"])
    instance = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0][
        "Instances"][0]["InstanceId"]
    account = boto3.client("sts", endpoint_url=moto_server, region_name=REGION, aws_access_key_id="testing",
                           aws_secret_access_key="testing").get_caller_identity()["Account"]
    imds = Imds(InstanceMeta(instance, "c5.large", "us-east-1a", REGION, account, role_name="boot-role")).start()
    try:
        host = Host(tmp_path, imds, [*TOOLS, "python3"])  # no AWS CLI, and the repository has none
        out = host.boot(render(BUCKET=BUCKET, GROUP=GROUP, BUCKET_OWNER=account), endpoint=moto_server)
    finally:
        imds.stop()
    assert out.returncode == 1 and "boot failed: cannot install the AWS CLI" in out.stdout, out.stdout
    key = contract.Layout("p").instances("s-1") + f"{instance}.json"
    assert f"boot failure reported to s3://{BUCKET}/{key}" in out.stdout
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert report["state"] == contract.BOOT_FAILED and report["instance_id"] == instance
    assert report["reason"] == "cannot install the AWS CLI: Error: Unable to find a match: awscli-2"
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 0 and "left the Auto Scaling group" in out.stdout
    assert host.shutdowns()[-1] == "-h now"
