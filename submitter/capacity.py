"""Capacity: the instance role, a security group with no ingress, the launch template and the Auto Scaling
group of spot workers; and their removal once a submission has drained.

Every name comes from the submission id, so a retried submit creates nothing twice.
"""

from __future__ import annotations

import time
from typing import Any

from submitter.aws import autoscaling as asg_api
from submitter.aws import ec2 as ec2_api
from submitter.aws import iam as iam_api
from submitter.aws import sqs as sqs_api
from submitter.aws.errors import translate
from submitter.aws.session import Aws
from submitter.plan import Plan
from submitter.progress import Progress

PROFILE_WAIT_S = 60


def launch(aws: Aws, plan: Plan, progress: Progress) -> dict[str, Any]:
    """Create what runs the workers; returns the ids. Nothing here starts before staging is complete."""
    ec2 = aws.client("ec2")
    zones = sorted({p.availability_zone for p in plan.placements}) or None
    subnets = ec2_api.default_subnets(ec2, zones)
    profile_arn = iam_api.ensure_instance_role(aws.client("iam"), plan.names.role, plan.iam_policy, plan.tags)
    _wait_for_profile(aws, plan.names.instance_profile)
    group_id = ec2_api.ensure_security_group(ec2, plan.names.security_group, plan.security_group["Description"],
                                             subnets[0], plan.tags)
    data = dict(plan.launch_template)
    data["SecurityGroupIds"] = [group_id]
    template_id = ec2_api.ensure_launch_template(ec2, plan.names.launch_template, data, plan.tags)
    params = {k: v for k, v in plan.group.items() if k != "AvailabilityZones"}
    params["VPCZoneIdentifier"] = ",".join(subnets)
    created = asg_api.ensure_group(aws.client("autoscaling"), params)
    types = ", ".join(o["InstanceType"] for o in params["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"])
    progress.done(f"{'launched' if created else 'found'} group {plan.names.group}: "
                  f"{plan.group['DesiredCapacity']} spot worker(s) over {types}")
    return {"instance_profile": profile_arn, "security_group": group_id, "launch_template": template_id,
            "subnets": subnets}


def _wait_for_profile(aws: Aws, name: str) -> None:
    # IAM is eventually consistent: EC2 may not see a new profile for some seconds. The group retries
    # failed launches by itself, but waiting here turns a slow start into a prompt one.
    iam = aws.client("iam")
    with translate("iam", "GetInstanceProfile"):
        iam.get_waiter("instance_profile_exists").wait(
            InstanceProfileName=name, WaiterConfig={"Delay": 1, "MaxAttempts": PROFILE_WAIT_S})


def live_instances(aws: Aws, submission: str) -> list[dict[str, Any]]:
    """The submission's instances that still bill (pending, running, stopping, shutting-down)."""
    return ec2_api.instances(aws.client("ec2"), [
        {"Name": "tag:submitter:submission", "Values": [submission]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "shutting-down"]},
    ])


def remove(aws: Aws, plan_names: Any, submission: str, wait_s: float = 120) -> list[str]:
    """Remove a drained submission's group, template, queues, role and security group; returns what went.

    Called once no run is left to do. The group goes first, so no replacement worker starts."""
    removed = []
    if asg_api.delete_group(aws.client("autoscaling"), plan_names.group):
        removed.append(f"group {plan_names.group}")
    deadline = time.monotonic() + wait_s
    while live_instances(aws, submission) and time.monotonic() < deadline:
        time.sleep(2)
    ec2 = aws.client("ec2")
    if ec2_api.delete_launch_template(ec2, plan_names.launch_template):
        removed.append(f"launch template {plan_names.launch_template}")
    sqs = aws.client("sqs")
    for name in (plan_names.queue, plan_names.dead_letter_queue):
        if sqs_api.delete_queue(sqs, name):
            removed.append(f"queue {name}")
    if iam_api.delete_instance_role(aws.client("iam"), plan_names.role):
        removed.append(f"role {plan_names.role}")
    with translate("ec2", "DescribeSecurityGroups"):
        groups = ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [plan_names.security_group]}])["SecurityGroups"]
    for group in groups:
        if ec2_api.delete_security_group(ec2, group["GroupId"]):
            removed.append(f"security group {group['GroupId']}")
    return removed
