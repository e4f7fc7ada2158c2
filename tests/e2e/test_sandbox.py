"""The sandbox itself, end to end: boot scripts really run, IMDS behaves as IMDSv2, interruptions happen,
prices and the registry answer as AWS would, and `down` leaves nothing behind.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from submitter.sandbox import api
from submitter.sandbox import state as st

pytestmark = pytest.mark.e2e
AMI = "ami-12c6146b"  # any image id moto knows; the simulated host ignores it

# What a real boot script does: IMDS through the standard variable (default: the link-local address), and the
# AWS CLI from the distribution's package.
PRELUDE = """#!/bin/bash
set -euxo pipefail
IMDS="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254/}"; IMDS="${IMDS%/}"
TOKEN=$(curl -sf -X PUT "$IMDS/latest/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
md() { curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/latest/meta-data/$1"; }
IID=$(md instance-id)
dnf install -y -q awscli-2  # the host, as the AMI, has no AWS CLI (docs/decisions.md, "Instance AMI")
"""


def _writes_e2e(sandbox: Any) -> dict[str, Any]:
    """The instance role these boot scripts need (the sandbox enforces IAM): writing under e2e/, nothing else."""
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:PutObject"],
                                                    "Resource": [f"arn:aws:s3:::{sandbox.state['bucket']}/e2e/*"]}]}


def _launch(sandbox: Any, user_data: str, volume_gib: int = 1) -> str:
    out = sandbox.client("ec2").run_instances(
        ImageId=AMI, InstanceType="t3.medium", MinCount=1, MaxCount=1, UserData=user_data,
        IamInstanceProfile={"Name": sandbox.instance_profile(_writes_e2e(sandbox))},
        InstanceInitiatedShutdownBehavior="terminate",
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": volume_gib, "VolumeType": "gp3"}}],
    )
    return str(out["Instances"][0]["InstanceId"])


def _s3_text(sandbox: Any, key: str) -> str | None:
    s3 = sandbox.client("s3")
    try:
        return s3.get_object(Bucket=sandbox.state["bucket"], Key=key)["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        return None


def _host_gone(instance_id: str) -> bool:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^{st.CONTAINER_PREFIX}{instance_id}$"],
                         capture_output=True, text=True, check=True)
    return not out.stdout.strip() and not st.mounts_under(st.WORK_ROOT / instance_id)


def test_user_data_writes_volume_copies_to_s3_and_shutdown_terminates(sandbox: Any) -> None:
    key = f"e2e/{uuid.uuid4().hex}/result.txt"
    script = PRELUDE + f"""
mkfs.ext4 -q /dev/sdf
mkdir -p /mnt/submitter/$IID
mount /dev/sdf /mnt/submitter/$IID
echo "written on $IID in $(md placement/availability-zone)" > /mnt/submitter/$IID/result.txt
aws s3 cp /mnt/submitter/$IID/result.txt s3://{sandbox.state['bucket']}/{key}
shutdown -h now
"""
    iid = _launch(sandbox, script)
    sandbox.wait_state(iid, "terminated", timeout=120)
    assert _s3_text(sandbox, key) == f"written on {iid} in us-east-1a\n"
    boot_log = api.logs(sandbox.settings, iid)
    assert "upload:" in boot_log and "shutdown -h now" in boot_log
    def loops() -> list[str]:
        return [d for d in st.loops_backed_by(sandbox.settings.sandbox_dir) if iid in (st.loop_backing(d) or "")]

    # The loop devices are detached last in the host's teardown, after its container and mounts.
    sandbox.wait_for(lambda: _host_gone(iid) and not loops(), 30, f"{iid}'s host, mounts and loop devices to go")


def test_imds_answers_401_without_token_and_the_instance_id_with_one(sandbox: Any) -> None:
    iid = _launch(sandbox, "#!/bin/bash\nsleep 600\n")
    endpoint = sandbox.wait_host(iid)["imds_endpoint"].rstrip("/")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{endpoint}/latest/meta-data/instance-id", timeout=5)
    assert denied.value.code == 401
    put = urllib.request.Request(f"{endpoint}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    token = urllib.request.urlopen(put, timeout=5).read().decode()

    def get(path: str) -> str:
        req = urllib.request.Request(f"{endpoint}{path}", headers={"X-aws-ec2-metadata-token": token})
        return str(urllib.request.urlopen(req, timeout=5).read().decode())

    assert get("/latest/meta-data/instance-id") == iid
    assert get("/latest/meta-data/placement/region") == sandbox.state["region"]
    role = get("/latest/meta-data/iam/security-credentials/").strip()
    creds = json.loads(get(f"/latest/meta-data/iam/security-credentials/{role}"))
    assert creds["Code"] == "Success" and creds["AccessKeyId"]
    # They are the role's own (STS) credentials, and the sandbox enforces its policy: e2e/ yes, elsewhere no.
    s3 = boto3.client("s3", endpoint_url=sandbox.state["endpoint_url"], region_name=sandbox.state["region"],
                      aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                      aws_session_token=creds["Token"])
    s3.put_object(Bucket=sandbox.state["bucket"], Key=f"e2e/{iid}/probe.txt", Body=b"mine")
    with pytest.raises(ClientError) as denied_elsewhere:
        s3.put_object(Bucket=sandbox.state["bucket"], Key=f"submitter/{iid}/probe.txt", Body=b"not mine")
    assert denied_elsewhere.value.response["Error"]["Code"] == "AccessDenied"
    assert json.loads(get("/latest/dynamic/instance-identity/document"))["instanceId"] == iid
    assert get("/latest/user-data").startswith("#!/bin/bash")
    with pytest.raises(urllib.error.HTTPError) as none_yet:
        get("/latest/meta-data/spot/instance-action")
    assert none_yet.value.code == 404
    sandbox.client("ec2").terminate_instances(InstanceIds=[iid])
    sandbox.wait_for(lambda: _host_gone(iid), 60, f"{iid}'s host to be torn down after TerminateInstances")


def test_interrupt_gives_notice_in_imds_then_terminates(sandbox: Any) -> None:
    key = f"e2e/{uuid.uuid4().hex}/noticed.json"
    # The instance watches for the notice as a spot-aware boot script does, and reports what it saw.
    script = PRELUDE + f"""
while ! curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/latest/meta-data/spot/instance-action" -o /tmp/n
do sleep 1; done
aws s3 cp /tmp/n s3://{sandbox.state['bucket']}/{key}
sleep 600
"""
    iid = _launch(sandbox, script)
    sandbox.wait_host(iid)
    notice = 6.0
    result = api.interrupt(sandbox.settings, iid, notice)
    given = time.monotonic()
    assert "terminate_at" in result
    seen = sandbox.wait_for(lambda: _s3_text(sandbox, key), 30, "the instance to report the interruption notice")
    assert json.loads(seen)["action"] == "terminate"
    assert sandbox.instance_state(iid) == "running"  # still inside the notice period
    sandbox.wait_state(iid, "terminated", timeout=60)
    assert time.monotonic() - given >= notice - 1.5
    sandbox.wait_for(lambda: _host_gone(iid), 60, f"{iid}'s host to be torn down after the interruption")


def test_auto_scaling_instances_run_the_launch_template_user_data(sandbox: Any) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    key = f"e2e/{name}/asg.txt"
    script = PRELUDE + f"""
echo "$IID $(md instance-life-cycle)" | aws s3 cp - s3://{sandbox.state['bucket']}/{key}
sleep 600
"""
    ec2, asg = sandbox.client("ec2"), sandbox.client("autoscaling")
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "ImageId": AMI, "InstanceType": "t3.medium",
        "UserData": base64.b64encode(script.encode()).decode(),
        "IamInstanceProfile": {"Name": sandbox.instance_profile(_writes_e2e(sandbox))},
        "InstanceMarketOptions": {"MarketType": "spot"},
        "BlockDeviceMappings": [{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}}],
    })
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name, MinSize=0, MaxSize=1, DesiredCapacity=1, AvailabilityZones=["us-east-1b"],
        LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
    )
    try:
        text = sandbox.wait_for(lambda: _s3_text(sandbox, key), 60, "the ASG instance's boot script to report")
        iid, lifecycle = text.split()
        assert lifecycle == "spot"
    finally:
        asg.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    sandbox.wait_for(lambda: _host_gone(iid), 60, f"{iid}'s host to be torn down after the group's deletion")


def test_spot_prices_are_a_realistic_table_through_the_api(sandbox: Any) -> None:
    ec2 = sandbox.client("ec2")
    rows = ec2.describe_spot_price_history(InstanceTypes=["g4dn.xlarge", "c5.large"],
                                           ProductDescriptions=["Linux/UNIX"])["SpotPriceHistory"]
    zones = {r["AvailabilityZone"] for r in rows if r["InstanceType"] == "g4dn.xlarge"}
    assert len(zones) >= 3
    gpu = [float(r["SpotPrice"]) for r in rows if r["InstanceType"] == "g4dn.xlarge"]
    assert len(set(gpu)) > 1 and all(0.1 < p < 1.0 for p in gpu)
    assert {r["ProductDescription"] for r in rows} == {"Linux/UNIX"}
    age = time.time() - rows[0]["Timestamp"].timestamp()
    assert 0 <= age < 3 * 3600
    one_az = ec2.describe_spot_price_history(InstanceTypes=["c5.large"], AvailabilityZone="us-east-1c")
    assert {r["AvailabilityZone"] for r in one_az["SpotPriceHistory"]} == {"us-east-1c"}


def test_registry_accepts_exactly_the_ecr_token(sandbox: Any) -> None:
    import docker

    data = sandbox.client("ecr").get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    registry = sandbox.state["registry"]
    engine = docker.from_env()
    assert engine.login(username=user, password=password, registry=registry, reauth=True)
    with pytest.raises(docker.errors.APIError):
        engine.login(username=user, password=password + "x", registry=registry, reauth=True)


def test_down_leaves_no_process_container_loop_device_or_mount(private_sandbox: Any) -> None:
    """A second, private sandbox, taken down while an instance holds a mount and a job container."""
    box = private_sandbox
    settings, state = box.settings, box.state
    assert api.up(settings, lambda _t: None)["pid"] == state["pid"]  # idempotent
    try:
        image = state["host_image"]
        script = PRELUDE + f"""
mkfs.ext4 -q /dev/sdf && mkdir -p /mnt/submitter/$IID && mount /dev/sdf /mnt/submitter/$IID
mkdir -p /mnt/submitter/$IID/out
docker run -d --name job-$IID -v /mnt/submitter/$IID/out:/out --entrypoint sleep {image} 600
touch /mnt/submitter/$IID/out/started
sleep 600
"""
        iid = _launch(box, script)
        box.wait_for(lambda: (st.WORK_ROOT / iid / "out" / "started").exists(), 60, "the job container to start")
    finally:
        api.down(settings, lambda _t: None)
    assert api.status(settings)["up"] is False
    label = st.home_hash(settings.home)
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={st.LABEL}={label}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert left == []
    jobs = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=job-{iid}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert jobs == []
    assert not st.process_alive(state["pid"], "submitter.sandbox.daemon")
    assert not st.process_alive(state["registry_pid"], "docker-registry")
    assert st.loops_backed_by(settings.sandbox_dir) == []
    assert st.mounts_under(st.WORK_ROOT / iid) == []
    assert not (st.WORK_ROOT / iid).exists()
