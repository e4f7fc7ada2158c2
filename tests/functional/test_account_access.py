"""The access pieces against moto in-process: the temporary port-22 rule (added, removed on error and Ctrl-C),
the caller's CIDR, host key checks, and what `locate` says when a run cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from submitter.access import hostkeys
from submitter.access import target as reach
from submitter.aws.session import Aws
from submitter.errors import RemoteError, UsageError
from submitter.settings import Settings

REGION = "us-east-1"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBR6WGRY3q1is/+yynwUWcscmD7Ci71a3d6/gJ6eruKg"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3mZxQ0ZqkqVYbT1rWv1y9mRrZ6Jm3YzQqvXx9Tt3aB"


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield Aws(boto3.Session(region_name=REGION), REGION)


def _group(aws: Aws) -> str:
    ec2 = aws.client("ec2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    return str(ec2.create_security_group(GroupName="submitter-fsub", Description="t", VpcId=vpc)["GroupId"])


def _rules(aws: Aws, group: str) -> list[str]:
    perms = aws.client("ec2").describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    return [r["CidrIp"] for p in perms if p.get("FromPort") == 22 for r in p.get("IpRanges", [])]


def _sessions(aws: Aws, instance_id: str) -> dict[str, list[tuple[str, str]]]:
    """Port-22 rules reaching the instance, by security group: [(cidr, description)]."""
    ec2 = aws.client("ec2")
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    found = {}
    for g in ec2.describe_security_groups(GroupIds=[g["GroupId"] for g in inst["SecurityGroups"]])["SecurityGroups"]:
        rules = [(r["CidrIp"], r.get("Description", "")) for p in g["IpPermissions"] if p.get("FromPort") == 22
                 for r in p.get("IpRanges", [])]
        if rules:
            found[g["GroupId"]] = rules
    return found


def _target(aws: Aws, group: str, run: str = "fsub-20261126-070000-abc123") -> reach.Target:
    ec2 = aws.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    tags = {"submitter:submission": run, "submitter:bucket": "facc", "submitter:prefix": "p"}
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SecurityGroupIds=[group], TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["Instances"][0]
    return reach.Target(run, inst["InstanceId"], "127.0.0.1", 22, "ec2-user", group, Path("k.pem"),
                        f"submitter-{run}", inst["VpcId"], tags)


def _groups(aws: Aws) -> set[str]:
    return {g["GroupId"] for g in aws.client("ec2").describe_security_groups()["SecurityGroups"]}


def test_the_rule_exists_only_inside_the_block_even_on_error_ctrl_c_and_sighup(aws: Aws) -> None:
    import os
    import signal

    target = _target(aws, _group(aws))
    before = _groups(aws)
    said: list[str] = []
    with reach.port_22_open(aws, target, "198.51.100.7/32", said.append):
        ((group, rules),) = _sessions(aws, target.instance_id).items()
        assert group != target.group_id and _rules(aws, target.group_id) == [], "the submission's group stays shut"
        ((cidr, description),) = rules
        assert cidr == "198.51.100.7/32" and description.startswith("submitter ssh ") and " until " in description
        tags = {t["Key"]: t["Value"] for t in aws.client("ec2").describe_security_groups(
            GroupIds=[group])["SecurityGroups"][0]["Tags"]}
        assert tags["submitter:submission"] == target.run_id and tags["submitter:ssh-until"] in description
    assert _sessions(aws, target.instance_id) == {} and _groups(aws) == before
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), reach.port_22_open(aws, target, "198.51.100.7/32", said.append):
            assert _sessions(aws, target.instance_id)
            raise exc
        assert _sessions(aws, target.instance_id) == {} and _groups(aws) == before
    # A closed terminal (SIGHUP) ends the session like Ctrl-C: the rule goes. (Set the default handler first:
    # pytest may run under nohup, which ignores SIGHUP.)
    outer = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt), reach.port_22_open(aws, target, "198.51.100.7/32", said.append):
            os.kill(os.getpid(), signal.SIGHUP)
        assert _sessions(aws, target.instance_id) == {} and _groups(aws) == before
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL, "the handler before the session is back"
        # Under nohup a hang-up does not end the process, so it does not end the session either.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with reach.port_22_open(aws, target, "198.51.100.7/32", said.append):
            os.kill(os.getpid(), signal.SIGHUP)
            assert _sessions(aws, target.instance_id), "still open"
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert _sessions(aws, target.instance_id) == {} and _groups(aws) == before
    finally:
        signal.signal(signal.SIGHUP, outer)
    assert any("closed TCP 22" in s for s in said)


def test_two_sessions_from_one_address_have_a_rule_each(aws: Aws) -> None:
    target = _target(aws, _group(aws))
    with reach.port_22_open(aws, target, "198.51.100.7/32", lambda _t: None):
        with reach.port_22_open(aws, target, "198.51.100.7/32", lambda _t: None):
            both = _sessions(aws, target.instance_id)
            assert len(both) == 2 and len({d for rules in both.values() for _, d in rules}) == 2
        (left,) = _sessions(aws, target.instance_id).values()
        assert left == [r for rules in both.values() for r in rules if r in left], "the first session's rule stays"
    assert _sessions(aws, target.instance_id) == {}


def test_caller_cidr() -> None:
    assert reach.caller_cidr(None, sandbox=True) == "127.0.0.1/32"
    assert reach.caller_cidr(None, sandbox=False, fetch=lambda: "203.0.113.9\n") == "203.0.113.9/32"
    assert reach.caller_cidr("203.0.113.9", sandbox=False) == "203.0.113.9/32"
    assert reach.caller_cidr("203.0.113.0/24", sandbox=False) == "203.0.113.0/24"
    for wide in ("0.0.0.0/0", "10.0.0.0/8", "::/0"):
        with pytest.raises(UsageError):
            reach.caller_cidr(wide, sandbox=False)

    def offline() -> str:
        raise OSError("no route")

    with pytest.raises(RemoteError) as err:
        reach.caller_cidr(None, sandbox=False, fetch=offline)
    assert "--cidr" in (err.value.next_step or "")


def test_host_keys_from_the_console_then_strict(tmp_path: Path) -> None:
    console = f"boot...\n-----BEGIN SSH HOST KEY KEYS-----\n{KEY} root@ip\n-----END SSH HOST KEY KEYS-----\n"
    assert hostkeys.console_host_keys(console) == [KEY]
    known = hostkeys.KnownHosts(tmp_path / "known_hosts")
    said: list[str] = []
    with pytest.raises(RemoteError):
        hostkeys.verify_host_key("i-1", OTHER, [KEY], known, said.append)
    assert known.get("i-1") == [], "a refused key is not recorded"
    hostkeys.verify_host_key("i-1", KEY, [KEY], known, said.append)
    assert known.get("i-1") == [KEY]
    hostkeys.verify_host_key("i-1", KEY, [], known, said.append)  # recorded: console not needed
    with pytest.raises(RemoteError) as err:
        hostkeys.verify_host_key("i-1", OTHER, [OTHER], known, said.append)
    assert "NOT the key recorded" in err.value.what
    # No console keys yet: trusted on first use, loudly, then strict.
    hostkeys.verify_host_key("i-2", KEY, [], known, said.append)
    assert said[-1].startswith("WARNING") and "first use" in said[-1]
    with pytest.raises(RemoteError):
        hostkeys.verify_host_key("i-2", OTHER, [], known, said.append)


RUN = "facc-20261126-070000-abc123"  # a run id names its submission by its shape: the tags must match it


def _tagged(submission: str) -> list[dict[str, Any]]:
    return [{"ResourceType": "instance", "Tags": [{"Key": "submitter:submission", "Value": submission}]}]


def test_locate_says_why_a_run_cannot_be_reached(aws: Aws, tmp_path: Path) -> None:
    s3, ec2 = aws.client("s3"), aws.client("ec2")
    s3.create_bucket(Bucket="facc")
    settings = Settings(region=REGION, bucket="facc", home=tmp_path)

    def status(run: str, **fields: Any) -> None:
        body = json.dumps({"run_id": run, **fields})
        s3.put_object(Bucket="facc", Key=f"submitter/runs/{run}/status.json", Body=body)

    status(f"{RUN}-0", state="queued")
    with pytest.raises(RemoteError, match="is queued"):
        reach.locate(aws, settings, f"{RUN}-0")
    with pytest.raises(UsageError, match="is not a run id"):
        reach.locate(aws, settings, "../../x")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    (bare,) = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=_tagged(RUN))["Instances"]
    status(f"{RUN}-1", state="running", instance_id=bare["InstanceId"])
    with pytest.raises(RemoteError) as err:
        reach.locate(aws, settings, f"{RUN}-1")
    assert "without a key pair" in err.value.what and "--key-pair" in (err.value.next_step or "")
    ec2.create_key_pair(KeyName="fk")
    group = _group(aws)
    (keyed,) = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName="fk", SecurityGroupIds=[group],
                                 TagSpecifications=_tagged(RUN))["Instances"]
    status(f"{RUN}-2", state="running", instance_id=keyed["InstanceId"])
    with pytest.raises(RemoteError, match="private key"):
        reach.locate(aws, settings, f"{RUN}-2")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "fk.pem").write_text("x")
    target = reach.locate(aws, settings, f"{RUN}-2")
    assert target.user == "ec2-user" and target.port == 22 and target.container == f"submitter-{RUN}-2"
    assert target.group_id == group
    assert target.host == keyed.get("PublicIpAddress", target.host)


def test_a_forged_status_naming_an_instance_of_no_or_another_submission_opens_nothing(
        aws: Aws, tmp_path: Path) -> None:
    s3, ec2 = aws.client("s3"), aws.client("ec2")
    s3.create_bucket(Bucket="facc")
    settings = Settings(region=REGION, bucket="facc", home=tmp_path)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "fk.pem").write_text("x")
    ec2.create_key_pair(KeyName="fk")
    group = _group(aws)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    never = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName="fk",
                              SecurityGroupIds=[group])["Instances"][0]["InstanceId"]
    other = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName="fk", SecurityGroupIds=[group],
                              TagSpecifications=_tagged("other-20261126-070000-def456"))["Instances"][0]["InstanceId"]
    for run, iid, why in ((f"{RUN}-0", never, "submitter never launched it"),
                          (f"{RUN}-1", other, "other-20261126-070000-def456")):
        # The document even claims the other submission: only the run id's own submission counts.
        body = json.dumps({"run_id": run, "submission_id": "other-20261126-070000-def456", "state": "running",
                           "instance_id": iid})
        s3.put_object(Bucket="facc", Key=f"submitter/runs/{run}/status.json", Body=body)
        with pytest.raises(RemoteError) as err:
            reach.locate(aws, settings, run)
        assert iid in err.value.where and why in err.value.what and "forged" in (err.value.next_step or "")
    assert _rules(aws, group) == [], "no rule opened"


def test_gc_removes_a_session_rule_past_its_time_and_leaves_a_live_one(aws: Aws) -> None:
    """A session killed with -9 never closes its rule: once its time has passed, gc takes it off the instance."""
    from datetime import datetime, timedelta, timezone

    from submitter import gc, tracking
    from submitter.aws.s3 import S3

    aws.client("s3").create_bucket(Bucket="facc")
    target = _target(aws, _group(aws))
    long_ago = datetime.now(timezone.utc) - timedelta(days=2)
    with reach.port_22_open(aws, target, "198.51.100.7/32", lambda _t: None, now=long_ago):
        (stale,) = _sessions(aws, target.instance_id)
        with reach.port_22_open(aws, target, "198.51.100.8/32", lambda _t: None):
            (live,) = set(_sessions(aws, target.instance_id)) - {stale}
            where = tracking.Where("facc", "p")
            s3 = S3(aws.client("s3"), "facc")
            orphans = [o for o in gc.find(aws, s3, where) if o.kind == "ssh-rule"]
            assert [o.id for o in orphans] == [stale] and "time ended" in orphans[0].why
            assert [o.id for o in orphans if o.id == live] == []
            # Another bucket's gc does not judge it at all.
            assert not [o for o in gc.find(aws, s3, tracking.Where("facc", "q")) if o.kind == "ssh-rule"]
            assert gc.remove(aws, orphans, lambda _t: None) == orphans
            assert set(_sessions(aws, target.instance_id)) == {live}
    assert _sessions(aws, target.instance_id) == {}
