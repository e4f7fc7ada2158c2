"""EC2 adapter for the warm image cache (`submitter cache`): EBS snapshots, and the one on-demand instance that
fills the volume they are made of."""

from __future__ import annotations

import time
from typing import Any

from submitter import contract
from submitter.aws.errors import translate
from submitter.errors import AwsError


def ours(ec2: Any, filters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """This account's snapshots that carry the cache's image tag (and `filters`), every state."""
    wanted = [{"Name": "tag-key", "Values": [contract.TAG_CACHE_IMAGE]}, *(filters or [])]
    found: list[dict[str, Any]] = []
    with translate("ec2", "DescribeSnapshots"):
        for page in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=wanted):
            found += page["Snapshots"]
    return found


def create(ec2: Any, volume_id: str, description: str, tags: dict[str, str]) -> str:
    with translate("ec2", "CreateSnapshot"):
        answer = ec2.create_snapshot(VolumeId=volume_id, Description=description, TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    return str(answer["SnapshotId"])


def wait_completed(ec2: Any, snapshot_id: str, wait_s: float, poll_s: float = 15) -> dict[str, Any]:
    """The snapshot once `completed` (an hour is not unusual for a first snapshot of tens of GB)."""
    deadline = time.monotonic() + wait_s
    while True:
        with translate("ec2", "DescribeSnapshots"):
            snap = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        if snap["State"] == "completed":
            return dict(snap)
        if snap["State"] == "error" or time.monotonic() >= deadline:
            raise AwsError("ec2", "CreateSnapshot", snap["State"], f"{snapshot_id}: {snap.get('StateMessage', '')}",
                           "run `submitter cache` again; `submitter gc` removes a failed snapshot")
        time.sleep(poll_s)


def delete(ec2: Any, snapshot_id: str) -> bool:
    try:
        with translate("ec2", "DeleteSnapshot"):
            ec2.delete_snapshot(SnapshotId=snapshot_id)
    except AwsError as exc:
        if exc.code == "InvalidSnapshot.NotFound":
            return False
        raise
    return True


def parameter(ssm: Any, name: str) -> str:
    """An SSM parameter's value (the AMI id a launch template's `resolve:ssm:` would give)."""
    with translate("ssm", "GetParameter"):
        return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])


def run_one(ec2: Any, params: dict[str, Any]) -> dict[str, Any]:
    with translate("ec2", "RunInstances"):
        return dict(ec2.run_instances(MinCount=1, MaxCount=1, **params)["Instances"][0])


def wait_state(ec2: Any, instance_id: str, states: set[str], wait_s: float, poll_s: float = 5) -> str:
    """Poll until the instance is in one of `states` (or the time is up); returns the last state seen."""
    deadline = time.monotonic() + wait_s
    while True:
        with translate("ec2", "DescribeInstances"):
            found = [i for r in ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
                     for i in r["Instances"]]
        state = str(found[0]["State"]["Name"]) if found else "terminated"
        if state in states or time.monotonic() >= deadline:
            return state
        time.sleep(poll_s)
