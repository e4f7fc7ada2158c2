"""Garbage collection: find what submitter created and nothing needs any more, and remove it.

Only resources carrying the `submitter:submission` tag are ever looked at; anything untagged is invisible
here. A resource is an orphan when:
  instance         past its `submitter:deadline` and not running a run (no fresh heartbeat in S3)
  group            its runs are all finished, or it wants 0 workers and has none
  launch template, queue, role, security group
                   its submission has no live group, and its runs are all finished or its deadline passed
  volume           unattached (the launch's volumes are deleted with their instance, so a loose one leaked)
`submit --wait` and `cancel` remove a submission's resources themselves; `gc` covers everything else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from submitter import tracking
from submitter.aws import autoscaling as asg_api
from submitter.aws import ec2 as ec2_api
from submitter.aws import iam as iam_api
from submitter.aws import sqs as sqs_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws

TAG = "submitter:submission"
DEADLINE = "submitter:deadline"
HEARTBEAT_FRESH = timedelta(minutes=10)
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
ORDER = ("instance", "group", "launch-template", "queue", "role", "security-group", "volume")


@dataclass(frozen=True)
class Orphan:
    kind: str  # one of ORDER
    id: str  # what the delete call takes: instance/volume/SG id, group/template/queue/role name
    submission: str
    why: str
    url: str = ""  # queues: the URL

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}


def _tags(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def _deadline_passed(tags: dict[str, str], now: datetime) -> bool:
    deadline = tracking.parse_time(tags.get(DEADLINE))
    return deadline is not None and deadline < now


class _Runs:
    """Run states per submission, read from S3 once."""

    def __init__(self, s3: S3, where: tracking.Where) -> None:
        self.s3, self.where = s3, where
        self._cache: dict[str, list[dict[str, Any]]] = {}

    def of(self, sub: str) -> list[dict[str, Any]]:
        if sub not in self._cache:
            self._cache[sub] = tracking.statuses(self.s3, self.where, tracking.runs_of(self.s3, self.where, sub))
        return self._cache[sub]

    def finished(self, sub: str) -> bool:
        runs = self.of(sub)
        return bool(runs) and all(r.get("state") in tracking.TERMINAL for r in runs)

    def busy_on(self, sub: str, instance_id: str, now: datetime) -> bool:
        for r in self.of(sub):
            beat = tracking.parse_time(r.get("heartbeat_at"))
            if (r.get("instance_id") == instance_id and r.get("state") in ("starting", "running")
                    and beat is not None and now - beat < HEARTBEAT_FRESH):
                return True
        return False


def find(aws: Aws, s3: S3, where: tracking.Where, now: datetime | None = None) -> list[Orphan]:
    """Every orphan, in removal order."""
    now = now or datetime.now(timezone.utc)
    runs = _Runs(s3, where)
    ec2 = aws.client("ec2")
    found: list[Orphan] = []
    tagged = [{"Name": "tag-key", "Values": [TAG]}]
    for inst in ec2_api.instances(ec2, [*tagged, {"Name": "instance-state-name", "Values": LIVE_STATES}]):
        tags = _tags(inst.get("Tags"))
        sub = tags[TAG]
        if _deadline_passed(tags, now) and not runs.busy_on(sub, inst["InstanceId"], now):
            found.append(Orphan("instance", inst["InstanceId"], sub, f"past its deadline {tags[DEADLINE]}"))
    live_groups = set()
    for group in asg_api.tagged_groups(aws.client("autoscaling"), TAG):
        sub = _tags(group.get("Tags"))[TAG]
        empty = int(group["DesiredCapacity"]) == 0 and not group.get("Instances")
        if runs.finished(sub):
            found.append(Orphan("group", group["AutoScalingGroupName"], sub, "every run has finished"))
        elif empty:
            found.append(Orphan("group", group["AutoScalingGroupName"], sub, "no worker and none wanted"))
        else:
            live_groups.add(sub)

    def spent(sub: str, tags: dict[str, str]) -> str | None:
        if sub in live_groups:
            return None
        if runs.finished(sub):
            return "its submission has finished"
        if _deadline_passed(tags, now):
            return "its submission has no worker group and its deadline has passed"
        return None

    for lt in ec2_api.launch_templates(ec2, tagged):
        tags = _tags(lt.get("Tags"))
        why = spent(tags[TAG], tags)
        if why:
            found.append(Orphan("launch-template", lt["LaunchTemplateName"], tags[TAG], why))
    for name, url, tags in sqs_api.tagged_queues(aws.client("sqs"), "submitter-", TAG):
        why = spent(tags[TAG], tags)
        if why:
            found.append(Orphan("queue", name, tags[TAG], why, url))
    for name, tags in iam_api.tagged_roles(aws.client("iam"), "submitter-", TAG):
        why = spent(tags[TAG], tags)
        if why:
            found.append(Orphan("role", name, tags[TAG], why))
    for sg in ec2_api.security_groups(ec2, tagged):
        tags = _tags(sg.get("Tags"))
        why = spent(tags[TAG], tags)
        if why:
            found.append(Orphan("security-group", sg["GroupId"], tags[TAG], why))
    for vol in ec2_api.volumes(ec2, [*tagged, {"Name": "status", "Values": ["available"]}]):
        tags = _tags(vol.get("Tags"))
        found.append(Orphan("volume", vol["VolumeId"], tags[TAG], "not attached to any instance"))
    return sorted(found, key=lambda o: ORDER.index(o.kind))


def remove(aws: Aws, orphans: list[Orphan], say: Callable[[str], None], wait_s: float = 180,
           poll_s: float = 2.0) -> list[Orphan]:
    """Remove the orphans in dependency order; returns those removed (a failed one is reported, not raised)."""
    removed: list[Orphan] = []
    ec2 = aws.client("ec2")
    by_kind = {k: [o for o in orphans if o.kind == k] for k in ORDER}
    alive = ["pending", "running", "stopping", "shutting-down"]
    groups = [o.id for o in by_kind["group"]]
    members = [i["InstanceId"] for i in ec2_api.instances(ec2, [
        {"Name": "tag:aws:autoscaling:groupName", "Values": groups},
        {"Name": "instance-state-name", "Values": alive}])] if groups else []
    for o in by_kind["group"]:
        if asg_api.delete_group(aws.client("autoscaling"), o.id):
            removed.append(o)
        else:
            say(f"group {o.id}: could not be deleted; run gc again")
    # A group's instances are terminated directly as well: one protected from scale-in may outlive the group
    # delete (moto does that), and templates, roles and security groups stay in use until they are gone.
    waiting = [o.id for o in by_kind["instance"]] + members
    ec2_api.terminate(ec2, waiting)
    removed += by_kind["instance"]
    deadline = time.monotonic() + wait_s
    while waiting and time.monotonic() < deadline:
        if not ec2_api.instances(ec2, [{"Name": "instance-id", "Values": waiting},
                                       {"Name": "instance-state-name", "Values": alive}]):
            break
        time.sleep(poll_s)
    deletes: dict[str, Callable[[Orphan], bool]] = {
        "launch-template": lambda o: ec2_api.delete_launch_template(ec2, o.id),
        "queue": lambda o: sqs_api.delete_queue(aws.client("sqs"), o.id),
        "role": lambda o: iam_api.delete_instance_role(aws.client("iam"), o.id),
        "security-group": lambda o: ec2_api.delete_security_group(ec2, o.id),
        "volume": lambda o: ec2_api.delete_volume(ec2, o.id),
    }
    for kind, delete in deletes.items():
        for o in by_kind[kind]:
            if delete(o):
                removed.append(o)
            else:
                say(f"{kind} {o.id}: could not be deleted now (still in use?); run gc again later")
    return removed
