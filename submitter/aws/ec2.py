"""EC2 adapter: spot prices, subnets, security groups, launch templates, instances, volumes, key pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from submitter.aws.errors import translate

if TYPE_CHECKING:
    from submitter.aws.session import Aws


def client(aws: Aws) -> Any:
    return aws.client("ec2")


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


def _deleted(call: Callable[[], Any]) -> bool:
    """Run a delete; False when EC2 refuses it (already gone, or still in use): callers report what went."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError:
        return False
    return True


def delete_launch_template(ec2: Any, name: str) -> bool:
    return _deleted(lambda: ec2.delete_launch_template(LaunchTemplateName=name))


def delete_security_group(ec2: Any, group_id: str) -> bool:
    return _deleted(lambda: ec2.delete_security_group(GroupId=group_id))


def instances(ec2: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with translate("ec2", "DescribeInstances"):
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                found += reservation["Instances"]
    return found


# ------------------------------------------------------------------------------------------ key pairs


def key_pair(ec2: Any, name: str) -> dict[str, Any] | None:
    """The key pair `name` (with its public key), or None when EC2 has none by that name."""
    from botocore.exceptions import ClientError

    try:
        found = ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"]
    except ClientError as exc:
        if "NotFound" in str(exc.response.get("Error", {}).get("Code")):
            return None
        with translate("ec2", "DescribeKeyPairs"):
            raise
    return dict(found[0]) if found else None


def create_key_pair(ec2: Any, name: str, tags: dict[str, str]) -> str:
    """Create an ED25519 key pair; returns the private key (EC2 hands it out only now)."""
    with translate("ec2", "CreateKeyPair"):
        made = ec2.create_key_pair(KeyName=name, KeyType="ed25519", KeyFormat="pem", TagSpecifications=[
            {"ResourceType": "key-pair", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    return str(made["KeyMaterial"])


def import_key_pair(ec2: Any, name: str, public_key: str, tags: dict[str, str]) -> None:
    with translate("ec2", "ImportKeyPair"):
        ec2.import_key_pair(KeyName=name, PublicKeyMaterial=public_key.encode(), TagSpecifications=[
            {"ResourceType": "key-pair", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])


# ------------------------------------------------------------------------------------------ ssh access


def instance(ec2: Any, instance_id: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as exc:
        if "NotFound" in str(exc.response.get("Error", {}).get("Code")):
            return None
        with translate("ec2", "DescribeInstances"):
            raise
    found = [i for r in reservations for i in r["Instances"]]
    return dict(found[0]) if found else None


def ssh_rule(cidr: str, description: str = "") -> dict[str, Any]:
    """One inbound rule: TCP 22 from `cidr` (IPv4 or IPv6)."""
    entry = {"CidrIpv6" if ":" in cidr else "CidrIp": cidr}
    if description:
        entry["Description"] = description
    ranges = {"Ipv6Ranges" if ":" in cidr else "IpRanges": [entry]}
    return {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}


def authorize_ssh(ec2: Any, group_id: str, cidr: str, description: str) -> bool:
    """Open TCP 22 for `cidr`; False when exactly that rule was already there (then it is not ours)."""
    from botocore.exceptions import ClientError

    try:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[ssh_rule(cidr, description)])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "InvalidPermission.Duplicate":
            return False
        with translate("ec2", "AuthorizeSecurityGroupIngress"):
            raise
    return True


def revoke_ssh(ec2: Any, group_id: str, cidr: str) -> None:
    from botocore.exceptions import ClientError

    try:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[ssh_rule(cidr)])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("InvalidPermission.NotFound", "InvalidGroup.NotFound"):
            return
        with translate("ec2", "RevokeSecurityGroupIngress",
                       f"remove it by hand: aws ec2 revoke-security-group-ingress --group-id {group_id} "
                       f"--protocol tcp --port 22 --cidr {cidr}"):
            raise


def ingress(ec2: Any, group_id: str) -> list[dict[str, Any]]:
    with translate("ec2", "DescribeSecurityGroups"):
        groups = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return list(groups[0].get("IpPermissions", [])) if groups else []


def console_output(ec2: Any, instance_id: str) -> str:
    """The instance's console output (decoded), or '' when EC2 has none yet."""
    with translate("ec2", "GetConsoleOutput"):
        out = ec2.get_console_output(InstanceId=instance_id, Latest=True)
    return str(out.get("Output") or "")


def price_history(ec2: Any, instance_type: str, availability_zone: str, start: datetime,
                  end: datetime) -> list[tuple[datetime, float]]:
    """(time, price) points of a Linux spot pool over [start, end], oldest first; EC2 includes the price in
    effect at `start` even when it was set before."""
    points: list[tuple[datetime, float]] = []
    with translate("ec2", "DescribeSpotPriceHistory"):
        pages = ec2.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=[instance_type], AvailabilityZone=availability_zone,
            ProductDescriptions=["Linux/UNIX"], StartTime=start, EndTime=end)
        for page in pages:
            points += [(item["Timestamp"], float(item["SpotPrice"])) for item in page["SpotPriceHistory"]
                       if item.get("AvailabilityZone") == availability_zone]
    return sorted(points)


def terminate(ec2: Any, instance_ids: list[str]) -> None:
    if not instance_ids:
        return
    with translate("ec2", "TerminateInstances"):
        ec2.terminate_instances(InstanceIds=instance_ids)


def _listed(ec2: Any, operation: str, key: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every item of a paginated EC2 Describe call, e.g. ("DescribeVolumes", "Volumes")."""
    found: list[dict[str, Any]] = []
    method = "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
    with translate("ec2", operation):
        for page in ec2.get_paginator(method).paginate(Filters=filters):
            found += page[key]
    return found


def volumes(ec2: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _listed(ec2, "DescribeVolumes", "Volumes", filters)


def delete_volume(ec2: Any, volume_id: str) -> bool:
    return _deleted(lambda: ec2.delete_volume(VolumeId=volume_id))


def launch_templates(ec2: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _listed(ec2, "DescribeLaunchTemplates", "LaunchTemplates", filters)


def template_versions(ec2: Any, template_id: str) -> list[dict[str, Any]]:
    """The latest version of a launch template (its data: BlockDeviceMappings...)."""
    with translate("ec2", "DescribeLaunchTemplateVersions"):
        return list(ec2.describe_launch_template_versions(LaunchTemplateId=template_id,
                                                          Versions=["$Latest"])["LaunchTemplateVersions"])


def security_groups_named(ec2: Any, name: str) -> list[dict[str, Any]]:
    return security_groups(ec2, [{"Name": "group-name", "Values": [name]}])


def security_groups(ec2: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _listed(ec2, "DescribeSecurityGroups", "SecurityGroups", filters)


def availability_zones(ec2: Any) -> list[str]:
    """The region's availability zone names (doctor: proves the region is enabled for the account)."""
    with translate("ec2", "DescribeAvailabilityZones"):
        return [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]


def default_vcpus(ec2: Any, instance_types: list[str]) -> dict[str, int]:
    """Default vCPUs of each instance type (what a spot vCPU quota counts)."""
    with translate("ec2", "DescribeInstanceTypes", "check the instance type names (e.g. c5.large)"):
        found = ec2.describe_instance_types(InstanceTypes=instance_types)["InstanceTypes"]
    return {item["InstanceType"]: int(item["VCpuInfo"]["DefaultVCpus"]) for item in found}


# ------------------------------------------------------------------------------------ ssh session groups


def create_group(ec2: Any, name: str, description: str, vpc_id: str, tags: dict[str, str]) -> str:
    """A new security group with no inbound rule (an ssh session's own; the caller adds its one rule)."""
    with translate("ec2", "CreateSecurityGroup"):
        return str(ec2.create_security_group(
            GroupName=name, Description=description, VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group",
                                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["GroupId"])


def set_instance_groups(ec2: Any, instance_id: str, group_ids: list[str]) -> None:
    """Replace the instance's security groups (its primary interface's) with `group_ids`."""
    with translate("ec2", "ModifyInstanceAttribute"):
        ec2.modify_instance_attribute(InstanceId=instance_id, Groups=group_ids)


def instance_groups(ec2: Any, instance_id: str) -> list[str] | None:
    """The instance's security group ids; None when it is gone (terminated instances hold none)."""
    found = instance(ec2, instance_id)
    if found is None or found["State"]["Name"] in ("shutting-down", "terminated"):
        return None
    return [str(g["GroupId"]) for g in found.get("SecurityGroups", [])]


# ------------------------------------------------------------------------------------ placement scores


def placement_scores(ec2: Any, instance_types: list[str], target_capacity: int,
                     region: str) -> dict[tuple[str, str], int]:
    """Single-AZ Spot Placement Scores (1-10) for `target_capacity` instances of any of `instance_types`:
    {(type, AZ name): score}. EC2 scores the set of types per AZ (one score per AZ, not per type), so every
    type gets its AZ's score. The answer names AZs by id (use1-az1), mapped to names here. EC2 returns only the
    top ten AZs; an AZ it leaves out has no score. Raises AwsError (e.g. no ec2:GetSpotPlacementScores
    permission, throttling): the caller notes it and plans without scores.

    API: GetSpotPlacementScores(InstanceTypes, TargetCapacity, SingleAvailabilityZone, RegionNames) ->
    SpotPlacementScores[{Region, AvailabilityZoneId, Score}] (EC2 API Reference, SpotPlacementScore;
    docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetSpotPlacementScores.html)."""
    with translate("ec2", "DescribeAvailabilityZones"):
        zones = ec2.describe_availability_zones()["AvailabilityZones"]
    names = {z["ZoneId"]: z["ZoneName"] for z in zones if z.get("ZoneId")}
    scores: dict[tuple[str, str], int] = {}
    with translate("ec2", "GetSpotPlacementScores"):
        pages = ec2.get_paginator("get_spot_placement_scores").paginate(
            InstanceTypes=instance_types, TargetCapacity=max(1, target_capacity), TargetCapacityUnitType="units",
            SingleAvailabilityZone=True, RegionNames=[region])
        for page in pages:
            for item in page.get("SpotPlacementScores", []):
                zone = names.get(str(item.get("AvailabilityZoneId")))
                if zone is None or item.get("Score") is None:
                    continue
                for instance_type in instance_types:
                    scores[(instance_type, zone)] = int(item["Score"])
    return scores
