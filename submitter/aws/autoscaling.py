"""Auto Scaling adapter: the submission's group of spot workers."""

from __future__ import annotations

from typing import Any

from submitter.aws.errors import translate


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
