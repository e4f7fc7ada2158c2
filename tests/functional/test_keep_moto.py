"""limits.keep_on_failure against moto in-process, on a submission made by the real submit pipeline (a prebuilt
image, no engine): the instance role may detach and tag, the worker's Keeper (runtime/keep.py, through the boto3
store) leaves its group without giving up the slot while runs wait, clean-up and gc spare the kept instance and
what it uses until its window ends, and cancel ends a window whose worker does not answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from submitter import cancel as cancel_mod
from submitter import contract, execute, gc, tracking
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends.pool import Names, capacity
from submitter.progress import NullProgress
from submitter.runtime import keep as runtime_keep
from submitter.runtime.lifecycle import Attempt
from submitter.runtime.pool import PoolHost
from submitter.runtime.seams import Process, Settlement
from submitter.runtime.store_boto3 import Boto3Store
from submitter.settings import Settings
from submitter.spec import load

REGION = "us-east-1"
BUCKET = "fkeep"
WHERE = tracking.Where(BUCKET, "p")
LAYOUT = WHERE.layout
SPEC = """\
name: {name}
image: {{uri: {uri}}}
command: [python, train.py]
resources: {{instance_types: [c5.large], volume_gb: 8}}
limits: {{max_runtime: 20m, keep_on_failure: 5m}}
sweep: {{LR: [0.1, 0.05, 0.01]}}
queue: {{max_workers: 2}}
"""


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Aws, str]]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "SUBMITTER_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", REGION), ("SUBMITTER_HOME", str(tmp_path / "home"))):
        monkeypatch.setenv(name, value)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        session.client("s3").create_bucket(Bucket=BUCKET)
        ecr = session.client("ecr")
        uri = ecr.create_repository(repositoryName="train")["repository"]["repositoryUri"]
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                               "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                          "size": 1, "digest": "sha256:" + "0" * 64}, "layers": []})
        ecr.put_image(repositoryName="train", imageManifest=manifest, imageTag="v1")
        yield Aws(session, REGION), f"{uri}:v1"


def _submit(aws: tuple[Aws, str], tmp_path: Path, name: str) -> execute.Submitted:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, uri=aws[1]))
    settings = Settings(bucket=BUCKET, region=REGION, prefix="p")
    (sub,) = execute.submit(aws[0], settings, [load(spec)], {}, tmp_path, NullProgress(), engine=_no_engine)
    return sub


def _no_engine() -> Any:
    raise AssertionError("a prebuilt image needs no docker engine")


def _group(session: Aws, name: str) -> dict[str, Any] | None:
    found = session.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return found["AutoScalingGroups"][0] if found["AutoScalingGroups"] else None


def _instance(session: Aws, iid: str) -> dict[str, Any]:
    return dict(session.client("ec2").describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0])


def _tags(inst: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def _fail(s3: S3, run_id: str, sid: str, iid: str, **extra: Any) -> None:
    s3.put_json(LAYOUT.status(run_id), {"run_id": run_id, "submission_id": sid, "state": contract.FAILED,
                                        "exit_code": 3, "instance_id": iid, "cost": 0.01,
                                        "ended_at": contract.iso(), **extra})


def test_a_kept_worker_leaves_its_group_and_clean_up_and_gc_spare_it_until_its_window_ends(
        aws: tuple[Aws, str], tmp_path: Path) -> None:
    session = aws[0]
    sub = _submit(aws, tmp_path, "fkept")
    sid, ids = sub.plan.submission_id, [r.run_id for r in sub.plan.runs]
    names = Names.of(sid)
    s3 = S3(session.client("s3"), BUCKET)
    doc = s3.get_json(LAYOUT.submission_doc(sid)) or {}
    assert doc["keep_on_failure"] == 300
    iam = session.client("iam")
    (policy_name,) = iam.list_role_policies(RoleName=names.role)["PolicyNames"]
    statements = {s["Sid"]: s for s in iam.get_role_policy(RoleName=names.role, PolicyName=policy_name)[
        "PolicyDocument"]["Statement"]}
    assert statements["DetachFromOwnGroup"]["Action"] == ["autoscaling:DetachInstances"]
    assert statements["DetachFromOwnGroup"]["Resource"][0].endswith(f"autoScalingGroupName/{names.group}")
    assert statements["MarkSelfKept"]["Condition"] == {
        "StringEquals": {f"aws:ResourceTag/{contract.TAG_SUBMISSION}": sid},
        "ForAllValues:StringEquals": {"aws:TagKeys": [contract.TAG_KEEP_UNTIL]}}

    group = _group(session, names.group)
    assert group and len(group["Instances"]) == 2
    kept_iid = group["Instances"][0]["InstanceId"]
    # Run 0 failed on that worker; the other two are still queued (3 messages wait on the queue).
    _fail(s3, ids[0], sid, kept_iid)
    store = Boto3Store(REGION, BUCKET)
    host = PoolHost(store, LAYOUT, doc, {"instance_id": kept_iid}, price=0.36)
    attempt = Attempt(host, {"run_id": ids[0]}, contract.Status.from_json(s3.get_json(LAYOUT.status(ids[0]))),
                      Process(), Settlement())
    seen: dict[str, Any] = {}

    class Clock:
        now = 5000.0

        def __call__(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            self.now += seconds
            if not seen:
                during_the_window()

    def during_the_window() -> None:
        now = _group(session, names.group)
        assert now is not None
        seen["members"] = {i["InstanceId"] for i in now["Instances"]}
        seen["desired"] = now["DesiredCapacity"]
        seen["tag"] = _tags(_instance(session, kept_iid)).get(contract.TAG_KEEP_UNTIL)
        seen["gc"] = gc.find(session, s3, WHERE)
        # Everything else of the submission ends: clean-up spares the kept instance and its role.
        for run_id in ids[1:]:
            _fail(s3, run_id, sid, "i-other")
        seen["removed"] = capacity.remove(session, sid, wait_s=5)
        seen["state"] = _instance(session, kept_iid)["State"]["Name"]
        seen["role"] = bool(iam.list_role_policies(RoleName=names.role)["PolicyNames"])
        seen["gc_after"] = gc.find(session, s3, WHERE)
        s3.put_json(LAYOUT.run_cancel(ids[0]), {"at": contract.iso()})  # and `cancel RUN` ends the window

    clock = Clock()
    keeper = runtime_keep.Keeper(attempt, names.group, kept_iid, store.queue_url(doc["queue_name"]), clock=clock,
                                 sleep=clock.sleep, rearm=lambda minutes: None)
    assert keeper.run()
    assert kept_iid not in seen["members"] and len(seen["members"]) == 2, "runs wait: the group replaced it"
    assert seen["desired"] == 2
    assert contract.keep_until(seen["tag"]) is not None
    assert not [o for o in seen["gc"] if o.id == kept_iid or (o.submission == sid and o.kind == "role")]
    assert seen["state"] == "running" and seen["role"], seen["removed"]
    assert any(kept_iid in line and "kept until" in line for line in seen["removed"]), seen["removed"]
    assert f"group {names.group}" in seen["removed"]
    assert not [o for o in seen["gc_after"] if o.id == kept_iid or o.kind in ("role", "security-group")]

    status = s3.get_json(LAYOUT.status(ids[0])) or {}
    assert status[contract.KEPT_END_REASON] == "cancelled" and status[contract.KEPT_UNTIL] == seen["tag"]
    # The window is over: the tag says so, and gc takes the instance and what it used.
    assert contract.keep_until(_tags(_instance(session, kept_iid))[contract.TAG_KEEP_UNTIL]) is None
    found = gc.find(session, s3, WHERE)
    assert [o.why for o in found if o.id == kept_iid] == [
        f"its kept window ended at {_tags(_instance(session, kept_iid))[contract.TAG_KEEP_UNTIL]}"]
    assert [o for o in found if o.kind == "role" and o.submission == sid]
    gc.remove(session, found, lambda _: None)
    assert capacity.live_instances(session, sid) == []


def test_cancel_ends_a_kept_window_whose_worker_does_not_answer(aws: tuple[Aws, str], tmp_path: Path) -> None:
    session = aws[0]
    sub = _submit(aws, tmp_path, "fmute")
    sid, ids = sub.plan.submission_id, [r.run_id for r in sub.plan.runs]
    s3 = S3(session.client("s3"), BUCKET)
    group = _group(session, Names.of(sid).group)
    assert group
    iid = group["Instances"][0]["InstanceId"]
    until = contract.iso(contract.parse_iso(contract.iso()) + __import__("datetime").timedelta(minutes=5))
    session.client("ec2").create_tags(Resources=[iid], Tags=[{"Key": contract.TAG_KEEP_UNTIL, "Value": until}])
    session.client("autoscaling").detach_instances(AutoScalingGroupName=Names.of(sid).group, InstanceIds=[iid],
                                                   ShouldDecrementDesiredCapacity=True)
    _fail(s3, ids[0], sid, iid, **{contract.KEPT_UNTIL: until})
    said: list[str] = []
    result = cancel_mod.cancel(session, s3, WHERE, cancel_mod.scope(s3, WHERE, ids[0]), said.append,
                               wait_s=1, poll_s=0.2)
    assert result["kept_ended"] == [iid]
    assert any("ending the window of its kept instance" in line for line in said), said
    assert _instance(session, iid)["State"]["Name"] in ("shutting-down", "terminated")
    # The other runs are still queued: the rest of the submission stays for them.
    assert _group(session, Names.of(sid).group) is not None


def test_the_keep_statements_pass_parliament_and_appear_only_when_asked(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from parliament import analyze_policy_string

    from submitter.backends.pool import pool_plan
    from submitter.backends.pool.resources import instance_policy
    from submitter.plan import PriceLookup, make_plan

    def policy(keep: str) -> dict[str, Any]:
        (tmp_path / "job.yaml").write_text(
            "name: lint\nimage: {uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/train:v1}\ncommand: [x]\n"
            f"resources: {{instance_types: [c5.large]}}\nlimits: {{keep_on_failure: {keep}}}\n")
        plan = make_plan(load(tmp_path / "job.yaml"), Settings(bucket="bkt", prefix="p", region=REGION),
                         PriceLookup(None, "unknown"), now=datetime(2026, 11, 30, tzinfo=timezone.utc),
                         token="abc123", account="123456789012")
        return instance_policy(plan, pool_plan(plan).names, [])

    kept = policy("20m")
    sids = {s["Sid"] for s in kept["Statement"]}
    assert {"DetachFromOwnGroup", "MarkSelfKept"} <= sids
    findings = analyze_policy_string(json.dumps(kept)).findings
    assert [f"{f.issue}: {f.detail}" for f in findings] == []
    assert not {"DetachFromOwnGroup", "MarkSelfKept"} & {s["Sid"] for s in policy("0")["Statement"]}


def test_the_sandbox_refuses_to_detach_an_instance_that_is_not_in_the_group(aws: tuple[Aws, str],
                                                                           tmp_path: Path) -> None:
    from botocore.exceptions import ClientError

    from submitter.sandbox import limits

    session = aws[0]
    sub = _submit(aws, tmp_path, "fdetach")
    name = Names.of(sub.plan.submission_id).group
    group = _group(session, name)
    assert group
    member = group["Instances"][0]["InstanceId"]
    autoscaling = session.client("autoscaling")
    uninstall = limits.install()
    try:
        with pytest.raises(ClientError, match=f"The instance i-0123456789abcdef0 is not part of Auto Scaling group "
                                              f"{name}"):
            autoscaling.detach_instances(AutoScalingGroupName=name, InstanceIds=["i-0123456789abcdef0"],
                                         ShouldDecrementDesiredCapacity=True)
        autoscaling.detach_instances(AutoScalingGroupName=name, InstanceIds=[member],
                                     ShouldDecrementDesiredCapacity=True)
        with pytest.raises(ClientError, match="not part of Auto Scaling group"):  # once only
            autoscaling.detach_instances(AutoScalingGroupName=name, InstanceIds=[member],
                                         ShouldDecrementDesiredCapacity=True)
    finally:
        uninstall()
    after = _group(session, name)
    assert after and member not in {i["InstanceId"] for i in after["Instances"]}
