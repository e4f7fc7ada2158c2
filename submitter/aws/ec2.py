"""EC2 adapter: spot prices (and later launch templates, security groups, instances)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from submitter.aws.errors import translate


@dataclass(frozen=True)
class SpotPrice:
    instance_type: str
    availability_zone: str
    price: float
    timestamp: datetime


def spot_prices(ec2: Any, instance_types: list[str], now: datetime | None = None) -> list[SpotPrice]:
    """The latest Linux spot price per (type, AZ) from the last six hours of price history."""
    now = now or datetime.now(timezone.utc)
    latest: dict[tuple[str, str], SpotPrice] = {}
    with translate("ec2", "DescribeSpotPriceHistory"):
        pages = ec2.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=instance_types,
            ProductDescriptions=["Linux/UNIX"],
            StartTime=now - timedelta(hours=6),
        )
        for page in pages:
            for item in page["SpotPriceHistory"]:
                price = SpotPrice(item["InstanceType"], item["AvailabilityZone"], float(item["SpotPrice"]),
                                  item["Timestamp"])
                key = (price.instance_type, price.availability_zone)
                if key not in latest or latest[key].timestamp < price.timestamp:
                    latest[key] = price
    return sorted(latest.values(), key=lambda p: (p.price, p.instance_type, p.availability_zone))


def subnet_zones(ec2: Any) -> frozenset[str] | None:
    """AZs where the account has a default subnet (else any subnet): where capacity can be placed.

    None when the account has no subnet at all, so placement is not filtered by it.
    """
    with translate("ec2", "DescribeSubnets"):
        subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        if not subnets:
            subnets = ec2.describe_subnets()["Subnets"]
    return frozenset(s["AvailabilityZone"] for s in subnets) or None


def default_subnets(ec2: Any, zones: list[str] | None) -> list[str]:
    """Default subnets (one per AZ), limited to `zones` when given; the group spreads over them."""
    with translate("ec2", "DescribeSubnets"):
        subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    chosen = [s for s in subnets if not zones or s["AvailabilityZone"] in zones]
    if not chosen:
        from submitter.errors import CapacityError

        raise CapacityError(
            "EC2 subnets", f"no default subnet in {', '.join(zones or ['any AZ'])}",
            "create a default VPC (`aws ec2 create-default-vpc`) or a default subnet in those AZs")
    return [s["SubnetId"] for s in sorted(chosen, key=lambda s: s["AvailabilityZone"])]


def ensure_security_group(ec2: Any, name: str, description: str, subnet_id: str, tags: dict[str, str]) -> str:
    """A group with no inbound rules in the subnet's VPC (outbound stays open: S3, ECR, SQS). Idempotent."""
    with translate("ec2", "CreateSecurityGroup"):
        vpc = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["VpcId"]
        found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]},
                                                     {"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
        if found:
            return str(found[0]["GroupId"])
        created = ec2.create_security_group(
            GroupName=name, Description=description, VpcId=vpc,
            TagSpecifications=[{"ResourceType": "security-group",
                                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    return str(created["GroupId"])


def ensure_launch_template(ec2: Any, name: str, data: dict[str, Any], tags: dict[str, str]) -> str:
    from botocore.exceptions import ClientError

    with translate("ec2", "CreateLaunchTemplate"):
        try:
            found = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
            return str(found[0]["LaunchTemplateId"])
        except ClientError as exc:
            if "NotFound" not in exc.response["Error"]["Code"]:
                raise
        created = ec2.create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData=data,
            TagSpecifications=[{"ResourceType": "launch-template",
                                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    return str(created["LaunchTemplate"]["LaunchTemplateId"])


def delete_launch_template(ec2: Any, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        ec2.delete_launch_template(LaunchTemplateName=name)
    except ClientError:
        return False
    return True


def delete_security_group(ec2: Any, group_id: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        ec2.delete_security_group(GroupId=group_id)
    except ClientError:
        return False
    return True


def instances(ec2: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with translate("ec2", "DescribeInstances"):
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                found += reservation["Instances"]
    return found
