"""The pool's capacity: the instance role, a security group with no ingress, the launch template and the Auto
Scaling group of spot workers; and their removal once a submission has drained or is cancelled.

Every name comes from the submission id, so a retried submit creates nothing twice.
"""

from __future__ import annotations

import time
from typing import Any

from submitter import contract
from submitter.aws import autoscaling as asg_api
from submitter.aws import ec2 as ec2_api
from submitter.aws import iam as iam_api
from submitter.aws import sqs as sqs_api
from submitter.aws.session import Aws
from submitter.backends import job_role
from submitter.backends.pool.resources import Names, PoolPlan, zones
from submitter.plan import Plan
from submitter.progress import Progress

BILLING = ["pending", "running", "stopping", "shutting-down"]


def launch(aws: Aws, plan: Plan, pool: PoolPlan, progress: Progress) -> dict[str, Any]:
    """Create what runs the workers; returns the ids. Nothing here starts before staging is complete."""
    ec2 = ec2_api.client(aws)
    iam = iam_api.client(aws)
    subnets = ec2_api.default_subnets(ec2, zones(plan.placements) or None)
    profile_arn = iam_api.ensure_instance_role(iam, pool.names.role, pool.iam_policy, plan.tags)
    iam_api.wait_instance_profile(iam, pool.names.instance_profile)
    if pool.job_role is not None:  # after the instance role: IAM refuses a trust naming a role not there yet
        iam_api.ensure_role(iam, pool.job_role["RoleName"], "", "submitter: what one submission's job may reach",
                            plan.tags, policy=pool.job_role["Policy"],
                            trust_policy=pool.job_role["AssumeRolePolicyDocument"])
    group_id = ec2_api.ensure_security_group(ec2, pool.names.security_group, pool.security_group["Description"],
                                             subnets[0], plan.tags)
    data = dict(pool.launch_template)
    data["SecurityGroupIds"] = [group_id]
    template_id = ec2_api.ensure_launch_template(ec2, pool.names.launch_template, data, plan.tags)
    params = {k: v for k, v in pool.group.items() if k != "AvailabilityZones"}
    params["VPCZoneIdentifier"] = ",".join(subnets)
    created = asg_api.ensure_group(asg_api.client(aws), params)
    types = ", ".join(o["InstanceType"] for o in params["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"])
    progress.done(f"{'launched' if created else 'found'} group {pool.names.group}: "
                  f"{pool.group['DesiredCapacity']} spot worker(s) over {types}")
    return {"instance_profile": profile_arn, "security_group": group_id, "launch_template": template_id,
            "subnets": subnets}


def live_instances(aws: Aws, submission: str) -> list[dict[str, Any]]:
    """The submission's instances that still bill (pending, running, stopping, shutting-down)."""
    return ec2_api.instances(ec2_api.client(aws), [
        {"Name": f"tag:{contract.TAG_SUBMISSION}", "Values": [submission]},
        {"Name": "instance-state-name", "Values": BILLING},
    ])


def remove(aws: Aws, submission: str, wait_s: float = 120) -> list[str]:
    """Remove a submission's group, instances, template, queues, role and security group; returns what went.

    Called once no run is left to do. The group goes first, so no replacement worker starts; its instances are
    terminated directly too: one protected from scale-in (cancel protects them) may outlive a group delete (moto,
    the sandbox's API, keeps them), and an instance outside the group must not stay either."""
    names = Names.of(submission)
    removed = []
    if asg_api.delete_group(asg_api.client(aws), names.group):
        removed.append(f"group {names.group}")
    ec2 = ec2_api.client(aws)
    kept = kept_instances(live_instances(aws, submission))
    leftover = [i["InstanceId"] for i in live_instances(aws, submission) if i["InstanceId"] not in kept]
    ec2_api.terminate(ec2, leftover)
    removed += [f"instance {i}" for i in leftover]
    deadline = time.monotonic() + wait_s
    while [i for i in live_instances(aws, submission) if i["InstanceId"] not in kept] and time.monotonic() < deadline:
        time.sleep(2)
    if kept:
        # A failed run's kept instance (docs/keep.md) ends itself when its window does; the role it reads its cancel
        # marker with and the security group it is in stay until then, and `submitter gc` removes them after.
        removed += [f"nothing else yet: instance {i} is kept until {until} (`submitter cancel RUN` ends it; "
                    f"`submitter gc` removes what is left after it)" for i, until in sorted(kept.items())]
        return removed
    if ec2_api.delete_launch_template(ec2, names.launch_template):
        removed.append(f"launch template {names.launch_template}")
    sqs = sqs_api.client(aws)
    for name in (names.queue, names.dead_letter_queue):
        if sqs_api.delete_queue(sqs, name):
            removed.append(f"queue {name}")
    for role in (names.role, job_role.name(submission)):
        if iam_api.delete_instance_role(iam_api.client(aws), role):
            removed.append(f"role {role}")
    for group in ec2_api.security_groups_named(ec2, names.security_group):
        if ec2_api.delete_security_group(ec2, group["GroupId"]):
            removed.append(f"security group {group['GroupId']}")
    return removed


def kept_instances(instances: list[dict[str, Any]]) -> dict[str, str]:
    """{instance id: keep-until} of the instances whose kept window is still open (their `submitter:keep-until`
    tag; one too far out is not believed, contract.keep_until)."""
    kept = {}
    for inst in instances:
        if inst.get("State", {}).get("Name") == "shutting-down":  # ending already (a cancel took it)
            continue
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags") or []}
        if contract.keep_until(tags.get(contract.TAG_KEEP_UNTIL)) is not None:
            kept[str(inst["InstanceId"])] = tags[contract.TAG_KEEP_UNTIL]
    return kept
