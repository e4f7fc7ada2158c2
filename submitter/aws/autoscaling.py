"""Auto Scaling adapter: the submission's group of spot workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from submitter.aws.errors import translate

if TYPE_CHECKING:
    from submitter.aws.session import Aws


def client(aws: Aws) -> Any:
    return aws.client("autoscaling")


def ensure_group(autoscaling: Any, params: dict[str, Any]) -> bool:
    """Create the group unless it exists (a retried submit); True when created now."""
    name = params["AutoScalingGroupName"]
    with translate("autoscaling", "CreateAutoScalingGroup"):
        if autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]:
            return False
        autoscaling.create_auto_scaling_group(**params)
    return True


def group(autoscaling: Any, name: str) -> dict[str, Any] | None:
    with translate("autoscaling", "DescribeAutoScalingGroups"):
        found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    return found[0] if found else None


def delete_group(autoscaling: Any, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    except ClientError:
        return False
    return True


def tagged_groups(autoscaling: Any, tag: str) -> list[dict[str, Any]]:
    """Every group carrying the tag key `tag` (any value); each with its instances and tags."""
    found: list[dict[str, Any]] = []
    with translate("autoscaling", "DescribeAutoScalingGroups"):
        for page in autoscaling.get_paginator("describe_auto_scaling_groups").paginate():
            found += [g for g in page["AutoScalingGroups"] if any(t["Key"] == tag for t in g.get("Tags", []))]
    return found


def protect_from_scale_in(autoscaling: Any, name: str, instance_ids: list[str]) -> None:
    """Lowering the desired capacity may then not pick these instances: each leaves by itself, its run done."""
    with translate("autoscaling", "SetInstanceProtection"):
        for start in range(0, len(instance_ids), 50):  # the API takes at most 50 ids
            autoscaling.set_instance_protection(AutoScalingGroupName=name, InstanceIds=instance_ids[start:start + 50],
                                                ProtectedFromScaleIn=True)


def set_desired(autoscaling: Any, name: str, desired: int) -> None:
    with translate("autoscaling", "SetDesiredCapacity"):
        autoscaling.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=desired, HonorCooldown=False)
