"""cancel and gc against moto in-process, on submissions made by the real submit pipeline (a prebuilt image, so
no engine). An "agent" thread stands in for the instances where a test needs one to answer a cancel marker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from submitter import cancel as cancel_mod
from submitter import execute, gc, tracking
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends.pool import Names
from submitter.cli import app
from submitter.errors import UsageError
from submitter.progress import NullProgress
from submitter.settings import Settings
from submitter.spec import load

REGION = "us-east-1"
BUCKET = "fcancel"
WHERE = tracking.Where(BUCKET, "p")
LAYOUT = WHERE.layout
SPEC = """\
name: {name}
image: {{uri: {uri}}}
command: [python, train.py]
resources: {{instance_types: [c5.large], volume_gb: 8}}
limits: {{max_runtime: 20m}}
sweep: {{LR: [0.1, 0.05, 0.01]}}
queue: {{max_workers: 2}}
"""


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Aws, str]]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "SUBMITTER_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("SUBMITTER_BUCKET", BUCKET), ("SUBMITTER_PREFIX", "p"), ("SUBMITTER_REGION", REGION),
                        ("SUBMITTER_HOME", str(tmp_path / "home"))):
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
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
    session, uri = aws
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, uri=uri))
    settings = Settings(bucket=BUCKET, region=REGION, prefix="p")
    (sub,) = execute.submit(session, settings, [load(spec)], {}, tmp_path, NullProgress(), engine=_no_engine)
    return sub


def _no_engine() -> Any:
    raise AssertionError("a prebuilt image needs no docker engine")


def _s3(aws: tuple[Aws, str]) -> S3:
    return S3(aws[0].client("s3"), BUCKET)


def _live(aws: tuple[Aws, str], submission: str) -> list[str]:
    from submitter.backends.pool import capacity

    return [i["InstanceId"] for i in capacity.live_instances(aws[0], submission)]


def _group(aws: tuple[Aws, str], name: str) -> dict[str, Any] | None:
    found = aws[0].client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return found["AutoScalingGroups"][0] if found["AutoScalingGroups"] else None


class FakeAgent(threading.Thread):
    """Holds one run `running` on an instance; when a cancel marker appears, uploads an output and reports
    `cancelled`, as submitter/runtime/lifecycle.py does (stop the container, upload outputs, write status)."""

    def __init__(self, s3: S3, run_id: str, submission: str, instance_id: str) -> None:
        super().__init__(daemon=True)
        self.s3, self.run_id, self.submission = s3, run_id, submission
        self.s3.put_json(LAYOUT.status(run_id), {
            "run_id": run_id, "submission_id": submission, "state": "running", "instance_id": instance_id,
            "started_at": "2026-11-26T07:00:00Z"})
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.s3.exists(LAYOUT.run_cancel(self.run_id)) or self.s3.exists(
                    LAYOUT.submission_cancel(self.submission)):
                status = self.s3.get_json(LAYOUT.status(self.run_id)) or {}
                self.s3.put_bytes(LAYOUT.outputs(self.run_id) + "partial.txt", b"so far")
                self.s3.put_json(LAYOUT.status(self.run_id),
                                 {**status, "state": "cancelled", "reason": "cancelled"})
                return
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------------- cancel


def test_cancelling_a_submission_drops_queued_runs_stops_the_running_one_and_leaves_nothing(
        aws: tuple[Aws, str], tmp_path: Path) -> None:
    sub = _submit(aws, tmp_path, "fcan")
    s3 = _s3(aws)
    sid = sub.plan.submission_id
    ids = [r.run_id for r in sub.plan.runs]
    group = _group(aws, Names.of(sub.plan.submission_id).group)
    assert group and len(group["Instances"]) == 2
    agent = FakeAgent(s3, ids[0], sid, group["Instances"][0]["InstanceId"])
    agent.start()
    said: list[str] = []
    scope = cancel_mod.scope(s3, WHERE, sid)
    assert scope.whole and scope.run_ids == ids
    result = cancel_mod.cancel(aws[0], s3, WHERE, scope, said.append, wait_s=30, poll_s=0.2)
    agent.stop.set()

    states = {st["run_id"]: st for st in result["runs"]}
    assert all(st["state"] == "cancelled" for st in states.values())
    assert states[ids[1]]["reason"] == "cancelled before it started"
    assert states[ids[0]]["reason"] == "cancelled" and not result["forced"]
    assert s3.exists(LAYOUT.outputs(ids[0]) + "partial.txt"), "the running run's outputs came first"
    assert s3.exists(LAYOUT.submission_cancel(sid))
    assert _live(aws, sid) == [], "no instance alive"
    assert _group(aws, Names.of(sub.plan.submission_id).group) is None
    assert any("queue" in r for r in result["removed"]) and any("role" in r for r in result["removed"])
    assert any("set to 0 worker(s)" in line for line in said)


def test_cancelling_one_run_keeps_the_workers_for_the_others(aws: tuple[Aws, str], tmp_path: Path) -> None:
    sub = _submit(aws, tmp_path, "fone")
    s3 = _s3(aws)
    sid, ids = sub.plan.submission_id, [r.run_id for r in sub.plan.runs]
    result = cancel_mod.cancel(aws[0], s3, WHERE, cancel_mod.scope(s3, WHERE, ids[2]), lambda _: None,
                               wait_s=5, poll_s=0.2)
    assert [st["state"] for st in result["runs"]] == ["cancelled"]
    assert s3.exists(LAYOUT.run_cancel(ids[2])) and not s3.exists(LAYOUT.submission_cancel(sid))
    assert [st["state"] for st in tracking.statuses(s3, WHERE, ids[:2])] == ["queued", "queued"]
    group = _group(aws, Names.of(sub.plan.submission_id).group)
    assert group and group["DesiredCapacity"] == 2 and len(_live(aws, sid)) == 2
    assert result["removed"] == []


def test_a_run_whose_worker_never_answers_is_cancelled_and_its_instance_terminated(
        aws: tuple[Aws, str], tmp_path: Path) -> None:
    sub = _submit(aws, tmp_path, "fmute")
    s3 = _s3(aws)
    sid, ids = sub.plan.submission_id, [r.run_id for r in sub.plan.runs]
    group = _group(aws, Names.of(sub.plan.submission_id).group)
    assert group
    FakeAgent(s3, ids[0], sid, group["Instances"][0]["InstanceId"])  # running, but never started: mute
    result = cancel_mod.cancel(aws[0], s3, WHERE, cancel_mod.scope(s3, WHERE, sid), lambda _: None,
                               wait_s=1, poll_s=0.2)
    assert result["forced"] == [ids[0]]
    assert "no confirmation from its worker" in result["runs"][0]["reason"]
    assert _live(aws, sid) == []


def test_a_forged_status_naming_an_instance_submitter_never_launched_terminates_nothing_of_it(
        aws: tuple[Aws, str], tmp_path: Path) -> None:
    sub = _submit(aws, tmp_path, "fforge")
    s3 = _s3(aws)
    sid, ids = sub.plan.submission_id, [r.run_id for r in sub.plan.runs]
    ec2 = aws[0].client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    victim = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    FakeAgent(s3, ids[0], "other-20261126-070000-def456", victim)  # the job's forged status: never answers
    said: list[str] = []
    result = cancel_mod.cancel(aws[0], s3, WHERE, cancel_mod.scope(s3, WHERE, ids[0]), said.append,
                               wait_s=1, poll_s=0.2)
    assert result["submission"] == sid, "the submission comes from the run id, not from the status"
    assert f"instance {victim}" not in result["removed"]
    assert any(victim in line and "submitter never launched it" in line for line in said), said
    state = ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"
    with pytest.raises(UsageError):
        cancel_mod.scope(s3, WHERE, "../../x")


def test_cancel_names_a_run_or_a_submission_and_the_cli_asks_first(aws: tuple[Aws, str], tmp_path: Path) -> None:
    sub = _submit(aws, tmp_path, "fcli")
    with pytest.raises(UsageError, match="RUN or SUBMISSION"):
        cancel_mod.scope(_s3(aws), WHERE, "fcli")  # a job name is refused
    result = CliRunner().invoke(app, ["cancel", sub.plan.submission_id])
    assert result.exit_code == 2 and "no terminal" in result.output
    result = CliRunner().invoke(app, ["cancel", sub.plan.submission_id, "--yes", "--json"])
    assert result.exit_code == 0, result.output
    assert {st["state"] for st in json.loads(result.stdout)["runs"]} == {"cancelled"}
    assert _live(aws, sub.plan.submission_id) == []


# ---------------------------------------------------------------------------------------------- gc


def test_gc_removes_orphans_tagged_by_submitter_and_nothing_else(aws: tuple[Aws, str], tmp_path: Path) -> None:
    session = aws[0]
    ec2 = session.client("ec2")
    s3 = _s3(aws)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def launch(tags: dict[str, str] | None) -> str:
        spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
        return str(ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="c5.large",
                                     TagSpecifications=spec)["Instances"][0]["InstanceId"])

    def volume(tags: dict[str, str] | None) -> str:
        spec = [{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
        return str(ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, TagSpecifications=spec)["VolumeId"])

    old = "old-20200101-000000-aaaaaa"
    s3.put_json(LAYOUT.queued(old), {"runs": [old]})
    s3.put_json(LAYOUT.status(old), {"run_id": old, "state": "failed"})
    stale = {"submitter:submission": old, "submitter:deadline": "2020-01-01T00:30:00Z",
             "submitter:bucket": BUCKET, "submitter:prefix": "p"}
    untagged_instance, untagged_volume = launch(None), volume(None)
    other_tags = launch({"Name": "not ours", "submitter:deadline": "2020-01-01T00:00:00Z"})  # no submission tag
    orphan_instance, orphan_volume = launch(stale), volume(stale)
    fresh_instance = launch({**stale, "submitter:deadline": "2099-01-01T00:00:00Z"})
    # Past its deadline but judged from nothing: a teammate's bucket, another prefix, no bucket tag at all (made
    # before the tag existed), and one of ours whose documents are missing (unknown, never an orphan).
    teammate = launch({**stale, "submitter:bucket": "teammate-bucket"})
    elsewhere = {**stale, "submitter:prefix": "q"}
    other_prefix, other_prefix_volume = launch(elsewhere), volume(elsewhere)
    untagged_bucket = launch({k: v for k, v in stale.items() if k != "submitter:bucket"})
    unknown = launch({**stale, "submitter:submission": "gone-20200101-000000-bbbbbb"})

    done = _submit(aws, tmp_path, "fdone")  # every run finished, but no one removed its resources
    for run in done.plan.runs:
        s3.put_json(LAYOUT.status(run.run_id), {"run_id": run.run_id, "state": "succeeded"})
    live = _submit(aws, tmp_path, "flive")  # still has queued runs: untouchable

    orphans = gc.find(session, s3, WHERE)
    got = {(o.kind, o.id) for o in orphans}
    names = Names.of(done.plan.submission_id)
    assert ("instance", orphan_instance) in got and ("volume", orphan_volume) in got
    assert {("group", names.group), ("launch-template", names.launch_template), ("queue", names.queue),
            ("queue", names.dead_letter_queue), ("role", names.role)} <= got
    assert any(o.kind == "security-group" and o.submission == done.plan.submission_id for o in orphans)
    assert not {o for o in orphans if o.submission == live.plan.submission_id}
    for untouchable in (untagged_instance, untagged_volume, other_tags, fresh_instance, teammate, other_prefix,
                        other_prefix_volume, untagged_bucket, unknown):
        assert untouchable not in {o.id for o in orphans}

    result = CliRunner().invoke(app, ["gc", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["removed"]) == len(orphans)

    def state(iid: str) -> str:
        return str(ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"])

    assert state(orphan_instance) in ("shutting-down", "terminated")
    for iid in (untagged_instance, other_tags, fresh_instance, teammate, other_prefix, untagged_bucket, unknown):
        assert state(iid) == "running", iid
    volumes = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert untagged_volume in volumes and orphan_volume not in volumes
    assert _group(aws, names.group) is None and _group(aws, Names.of(live.plan.submission_id).group) is not None
    assert session.client("sqs").get_queue_url(QueueName=Names.of(live.plan.submission_id).queue)
    assert gc.find(session, s3, WHERE) == [], "a second gc finds nothing"


# ---------------------------------------------------------------------------------------------- secrets


def _submit_with_secret(aws: tuple[Aws, str], tmp_path: Path, name: str) -> execute.Submitted:
    session, uri = aws
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, uri=uri) + "secrets: [FTOKEN]\n")
    settings = Settings(bucket=BUCKET, region=REGION, prefix="p")
    (sub,) = execute.submit(session, settings, [load(spec)], {"FTOKEN": "s3cr3t"}, tmp_path, NullProgress(),
                            engine=_no_engine)
    return sub


def _secrets(aws: tuple[Aws, str]) -> dict[str, dict[str, str]]:
    ssm = aws[0].client("ssm")
    names = [p["Name"] for p in ssm.describe_parameters()["Parameters"]]
    return {n: {t["Key"]: t["Value"] for t in ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=n)[
        "TagList"]} for n in names}


def test_secrets_are_tagged_with_their_submission_and_removed_by_cancel_and_clean_up(
        aws: tuple[Aws, str], tmp_path: Path) -> None:
    cancelled, drained = _submit_with_secret(aws, tmp_path, "fsec"), _submit_with_secret(aws, tmp_path, "fsed")
    found = _secrets(aws)
    for sub in (cancelled, drained):
        tags = found[f"/submitter/{sub.plan.submission_id}/FTOKEN"]
        assert tags["submitter:submission"] == sub.plan.submission_id
        assert (tags["submitter:bucket"], tags["submitter:prefix"]) == (BUCKET, "p")
    s3 = _s3(aws)
    result = cancel_mod.cancel(aws[0], s3, WHERE, cancel_mod.scope(s3, WHERE, cancelled.plan.submission_id),
                               lambda _: None, wait_s=5, poll_s=0.2)
    assert f"secret /submitter/{cancelled.plan.submission_id}/FTOKEN" in result["removed"]
    assert f"/submitter/{cancelled.plan.submission_id}/FTOKEN" not in _secrets(aws)
    # What `submit --wait` calls once every run has ended.
    removed = drained.backend.clean_up(aws[0], drained.plan.submission_id)
    assert f"secret /submitter/{drained.plan.submission_id}/FTOKEN" in removed
    assert _secrets(aws) == {}


def test_gc_removes_the_secrets_of_a_finished_submission_of_its_bucket_only(
        aws: tuple[Aws, str], tmp_path: Path) -> None:
    done = _submit_with_secret(aws, tmp_path, "fsgc")
    s3 = _s3(aws)
    for run in done.plan.runs:
        s3.put_json(LAYOUT.status(run.run_id), {"run_id": run.run_id, "state": "succeeded"})
    ssm = aws[0].client("ssm")
    # A teammate's finished submission of the same job name, in another bucket: its secret is not judged here.
    theirs = "/submitter/fsgc-20200101-000000-cccccc/FTOKEN"
    ssm.put_parameter(Name=theirs, Value="x", Type="SecureString")
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=theirs, Tags=[
        {"Key": "submitter:submission", "Value": "fsgc-20200101-000000-cccccc"},
        {"Key": "submitter:bucket", "Value": "teammate"}, {"Key": "submitter:prefix", "Value": "p"}])
    orphans = [o for o in gc.find(aws[0], s3, WHERE) if o.kind == "secrets"]
    assert [(o.id, o.submission) for o in orphans] == [
        (f"/submitter/{done.plan.submission_id}/", done.plan.submission_id)]
    gc.remove(aws[0], orphans, lambda _: None)
    assert list(_secrets(aws)) == [theirs]


def test_gc_of_one_prefix_leaves_a_finished_submission_of_another_prefix_alone(
        aws: tuple[Aws, str], tmp_path: Path) -> None:
    """Two teams, one account and bucket, two prefixes: each gc removes its own finished submission only."""
    session, uri = aws
    spec = tmp_path / "fteam.yaml"
    spec.write_text(SPEC.format(name="fteam", uri=uri))
    theirs_where = tracking.Where(BUCKET, "q")
    (theirs,) = execute.submit(session, Settings(bucket=BUCKET, region=REGION, prefix="q"), [load(spec)], {},
                               tmp_path, NullProgress(), engine=_no_engine)
    mine = _submit(aws, tmp_path, "fmine")
    s3 = _s3(aws)
    for sub, layout in ((theirs, theirs_where.layout), (mine, LAYOUT)):
        for run in sub.plan.runs:
            s3.put_json(layout.status(run.run_id), {"run_id": run.run_id, "state": "succeeded"})
    found = gc.find(session, s3, WHERE)
    assert {o.submission for o in found} == {mine.plan.submission_id}
    gc.remove(session, found, lambda _: None)
    assert _group(aws, Names.of(mine.plan.submission_id).group) is None
    assert _group(aws, Names.of(theirs.plan.submission_id).group) is not None, "the other prefix's group stays"
    assert session.client("sqs").get_queue_url(QueueName=Names.of(theirs.plan.submission_id).queue)
    assert {o.submission for o in gc.find(session, s3, theirs_where)} == {theirs.plan.submission_id}
