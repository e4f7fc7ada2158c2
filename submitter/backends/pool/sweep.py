"""The pool's orphans for `submitter gc`, found by the `submitter:submission` tag only (untagged resources are
never looked at) and with the bucket and prefix in use (another team's are not judged), and their removal in
dependency order. A submission whose runs or status documents are missing is unknown: nothing of it is an
orphan except an unattached volume. An orphan is:
  instance         past its `submitter:deadline` and not running a run (no fresh heartbeat in S3)
  group            its runs are all finished, or it wants 0 workers and has none
  launch template, queue, role, security group
                   its submission has no live group, and its runs are all finished or its deadline passed
  volume           unattached (the launch's volumes are deleted with their instance, so a loose one leaked)
  secrets          the submission's SSM parameters (tagged at submit), on the same terms as its role
  ssh-rule         an ssh session's own security group past its `submitter:ssh-until` (a killed session's)
A failed run's kept instance (`submitter:keep-until` in the future) is none of these, nor is anything its
submission uses; once that time has passed, the instance is an orphan whatever its deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from submitter import contract
from submitter.aws import autoscaling as asg_api
from submitter.aws import ec2 as ec2_api
from submitter.aws import iam as iam_api
from submitter.aws import sqs as sqs_api
from submitter.aws import ssm as ssm_api
from submitter.aws.session import Aws
from submitter.backends.base import Ledger, Orphan, Say

TAG, DEADLINE, SSH_UNTIL = contract.TAG_SUBMISSION, contract.TAG_DEADLINE, contract.TAG_SSH_UNTIL
KEEP_UNTIL = contract.TAG_KEEP_UNTIL
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
ALIVE = ["pending", "running", "stopping", "shutting-down"]
KINDS = ("instance", "group", "launch-template", "queue", "role", "ssh-rule", "security-group", "volume",
         "secrets")


def _tags(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def _deadline_passed(tags: dict[str, str], now: datetime) -> bool:
    deadline = contract.parse_iso(tags.get(DEADLINE))
    return deadline is not None and deadline < now


def orphans(aws: Aws, ledger: Ledger, now: datetime) -> list[Orphan]:
    ec2 = ec2_api.client(aws)
    found: list[Orphan] = []
    tagged = [{"Name": "tag-key", "Values": [TAG]}]
    kept: set[str] = set()  # submissions with a failed run's instance kept now: what it uses stays (docs/keep.md)
    for inst in ec2_api.instances(ec2, [*tagged, {"Name": "instance-state-name", "Values": LIVE_STATES}]):
        tags = _tags(inst.get("Tags"))
        sub = tags[TAG]
        if not ledger.ours(tags):
            continue
        if contract.keep_until(tags.get(contract.TAG_KEEP_UNTIL), now) is not None:
            kept.add(sub)
            continue
        # Its window is over (a worker that could not leave its group takes runs again: not while it is busy).
        if contract.parse_iso(tags.get(KEEP_UNTIL)) is not None and not ledger.busy_on(sub, inst["InstanceId"], now):
            found.append(Orphan("instance", inst["InstanceId"], sub, f"its kept window ended at {tags[KEEP_UNTIL]}"))
            continue
        if _deadline_passed(tags, now) and not ledger.busy_on(sub, inst["InstanceId"], now):
            found.append(Orphan("instance", inst["InstanceId"], sub, f"past its deadline {tags[DEADLINE]}"))
    live_groups = set(kept)
    for group in asg_api.tagged_groups(asg_api.client(aws), TAG):
        tags = _tags(group.get("Tags"))
        sub = tags[TAG]
        if not ledger.ours(tags):
            continue
        empty = int(group["DesiredCapacity"]) == 0 and not group.get("Instances")
        if ledger.finished(sub):
            found.append(Orphan("group", group["AutoScalingGroupName"], sub, "every run has finished"))
        elif empty and ledger.known(sub):
            found.append(Orphan("group", group["AutoScalingGroupName"], sub, "no worker and none wanted"))
        else:
            live_groups.add(sub)

    def spent(sub: str, tags: dict[str, str]) -> str | None:
        if sub in live_groups or not ledger.ours(tags) or not ledger.known(sub):
            return None
        if ledger.finished(sub):
            return "its submission has finished"
        if _deadline_passed(tags, now):
            return "its submission has no worker group and its deadline has passed"
        return None

    for lt in ec2_api.launch_templates(ec2, tagged):
        tags = _tags(lt.get("Tags"))
        why = spent(tags[TAG], tags)
        if why:
            found.append(Orphan("launch-template", lt["LaunchTemplateName"], tags[TAG], why))
    for name, url, tags in sqs_api.tagged_queues(sqs_api.client(aws), "submitter-", TAG):
        why = spent(tags[TAG], tags)
        if why:
            found.append(Orphan("queue", name, tags[TAG], why, url))
    # A submission's role is the pool's instance role or a Batch job role; either is spent on the same terms.
    for name, tags in iam_api.tagged_roles(iam_api.client(aws), "submitter-", TAG):
        why = spent(tags[TAG], tags)
        if why:
            found.append(Orphan("role", name, tags[TAG], why))
    ssm = ssm_api.client(aws)
    secrets: dict[str, list[str]] = {}  # SSM lists by path, not by tag: one submission's names together
    for name in ssm_api.secrets_under(ssm, contract.SECRETS_ROOT, recursive=True):
        secrets.setdefault(name[len(contract.SECRETS_ROOT) + 1:].split("/", 1)[0], []).append(name)
    for sub, names in secrets.items():
        tags = ssm_api.secret_tags(ssm, names[0])
        why = spent(sub, tags) if tags.get(TAG) == sub else None  # untagged: never looked at
        if why:
            found.append(Orphan("secrets", contract.secrets_prefix(sub), sub, why))
    for sg in ec2_api.security_groups(ec2, tagged):
        tags = _tags(sg.get("Tags"))
        if SSH_UNTIL in tags:  # an ssh session's own group (access/target.py): stale once its time has passed
            ended = contract.parse_iso(tags[SSH_UNTIL])
            why = (f"its ssh session's time ended at {tags[SSH_UNTIL]}" if ended is not None and ended < now
                   else spent(tags[TAG], tags))
            if why and ledger.ours(tags):
                found.append(Orphan("ssh-rule", sg["GroupId"], tags[TAG], why))
            continue
        why = spent(tags[TAG], tags)
        if why:
            found.append(Orphan("security-group", sg["GroupId"], tags[TAG], why))
    for vol in ec2_api.volumes(ec2, [*tagged, {"Name": "status", "Values": ["available"]}]):
        tags = _tags(vol.get("Tags"))
        if not ledger.ours(tags):
            continue
        found.append(Orphan("volume", vol["VolumeId"], tags[TAG], "not attached to any instance"))
    return found


def remove(aws: Aws, found: list[Orphan], say: Say, wait_s: float = 180, poll_s: float = 2.0) -> list[Orphan]:
    """Groups first (no replacement starts), then instances, then what they used; returns those removed."""
    removed: list[Orphan] = []
    ec2 = ec2_api.client(aws)
    by_kind = {k: [o for o in found if o.kind == k] for k in KINDS}
    groups = [o.id for o in by_kind["group"]]
    members = [i["InstanceId"] for i in ec2_api.instances(ec2, [
        {"Name": "tag:aws:autoscaling:groupName", "Values": groups},
        {"Name": "instance-state-name", "Values": ALIVE}])] if groups else []
    for o in by_kind["group"]:
        if asg_api.delete_group(asg_api.client(aws), o.id):
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
                                       {"Name": "instance-state-name", "Values": ALIVE}]):
            break
        time.sleep(poll_s)
    deletes: dict[str, Callable[[Orphan], bool]] = {
        "launch-template": lambda o: ec2_api.delete_launch_template(ec2, o.id),
        "queue": lambda o: sqs_api.delete_queue(sqs_api.client(aws), o.id),
        "role": lambda o: iam_api.delete_instance_role(iam_api.client(aws), o.id),
        "ssh-rule": lambda o: _close_session(ec2, o),
        "security-group": lambda o: ec2_api.delete_security_group(ec2, o.id),
        "volume": lambda o: ec2_api.delete_volume(ec2, o.id),
        "secrets": lambda o: bool(ssm_api.delete_secrets(ssm_api.client(aws), ssm_api.secrets_under(
            ssm_api.client(aws), o.id))),
    }
    for kind, delete in deletes.items():
        for o in by_kind[kind]:
            if delete(o):
                removed.append(o)
            else:
                say(f"{kind} {o.id}: could not be deleted now (still in use?); run gc again later")
    return removed


def _close_session(ec2: Any, orphan: Orphan) -> bool:
    """Take a stale ssh session's group off the submission's instances that still hold it, then delete it."""
    for inst in ec2_api.instances(ec2, [{"Name": f"tag:{TAG}", "Values": [orphan.submission]},
                                        {"Name": "instance-state-name", "Values": LIVE_STATES}]):
        groups = [str(g["GroupId"]) for g in inst.get("SecurityGroups", [])]
        if orphan.id in groups:
            ec2_api.set_instance_groups(ec2, inst["InstanceId"], [g for g in groups if g != orphan.id])
    return ec2_api.delete_security_group(ec2, orphan.id)
