"""What EC2 and Auto Scaling do at launch that moto leaves out, done inside the sandbox's moto process.

moto launches a mixed-instances group's workers with no instance type, in a random AZ, with the
launch template's `resolve:ssm:` image id unresolved and its metadata options (IMDSv2) ignored. The
sandbox makes each launch the way AWS would for a spot group: the cheapest (override type, subnet AZ)
pool whose price from the sandbox price table is at or under SpotMaxPrice (with `capacity-optimized-prioritized`,
the first override type in order that has such a pool, in its cheapest AZ: the table's price stands in for
spare capacity, as in placement.py's scores), the template's metadata
options applied, the AMI parameter resolved, and the instance marked spot. No pool under the max price
means no launch, as on AWS.
"""

from __future__ import annotations

import logging
from typing import Any

from submitter.sandbox import prices

log = logging.getLogger("submitter.sandbox.fidelity")


def cheapest_pool(
    types: list[str], subnets: list[tuple[str, str]], max_price: float | None, prioritized: bool = False
) -> tuple[str, str, str, float] | None:
    """(type, subnet id, AZ, price) of the cheapest offered pool at or under `max_price`, else None;
    `prioritized`: of the first type in `types` that has one."""
    if prioritized:
        for instance_type in types:
            found = cheapest_pool([instance_type], subnets, max_price)
            if found is not None:
                return found
        return None
    pools = []
    for instance_type in types:
        for subnet_id, zone in subnets:
            price = prices.price(instance_type, zone)
            if price is not None and (max_price is None or price <= max_price):
                pools.append((price, instance_type, subnet_id, zone))
    if not pools:
        return None
    price, instance_type, subnet_id, zone = min(pools)
    return instance_type, subnet_id, zone, price


def install() -> None:
    from moto.autoscaling.models import FakeAutoScalingGroup

    original = FakeAutoScalingGroup.replace_autoscaling_group_instances

    def replace_autoscaling_group_instances(self: Any, count_needed: int, propagated_tags: dict[str, str]) -> None:
        policy = getattr(self, "mixed_instances_policy", None) or {}
        overrides = (policy.get("LaunchTemplate") or {}).get("Overrides") or []
        if not overrides or count_needed <= 0:
            return original(self, count_needed, propagated_tags)
        _launch_spot(self, count_needed, dict(propagated_tags), overrides, policy)

    FakeAutoScalingGroup.replace_autoscaling_group_instances = replace_autoscaling_group_instances  # type: ignore[method-assign]


def _launch_spot(group: Any, count: int, tags: dict[str, str], overrides: list[dict[str, Any]],
                 policy: dict[str, Any]) -> None:
    from moto.autoscaling.models import ASG_NAME_TAG, InstanceState

    ec2 = group.autoscaling_backend.ec2_backend
    tags[ASG_NAME_TAG] = group.name
    tags.update(group.instance_tags)
    types = [o["InstanceType"] for o in overrides if o.get("InstanceType")]
    subnet_ids = [s for s in (group.vpc_zone_identifier or "").split(",") if s]
    subnets = [(s, ec2.get_subnet(s).availability_zone) for s in subnet_ids]
    raw_max = (policy.get("InstancesDistribution") or {}).get("SpotMaxPrice")
    max_price = float(raw_max) if raw_max not in (None, "") else None
    strategy = (policy.get("InstancesDistribution") or {}).get("SpotAllocationStrategy")
    pool = cheapest_pool(types, subnets, max_price, prioritized=strategy == "capacity-optimized-prioritized")
    if pool is None:
        log.warning("group %s: no spot pool of %s at or under %s; nothing launched", group.name, types, raw_max)
        return
    instance_type, subnet_id, zone, price = pool
    template = ec2._get_template_from_args({"LaunchTemplateName": group.ec2_launch_template.name}).data \
        if group.ec2_launch_template and group.ec2_launch_template.name else \
        ec2._get_template_from_args({"LaunchTemplateId": group.ec2_launch_template.id}).data
    image_id = _resolve_image(group, template.get("ImageId") or group.image_id)
    launch_template = {"LaunchTemplateName": group.ec2_launch_template.name} if group.ec2_launch_template.name \
        else {"LaunchTemplateId": group.ec2_launch_template.id}
    reservation = ec2.run_instances(
        image_id, count, group.user_data, group.security_groups,
        instance_type=instance_type, tags={"instance": tags}, placement=zone, subnet_id=subnet_id,
        launch_template=launch_template, is_instance_type_default=False, lifecycle="spot",
        metadata_options=template.get("MetadataOptions") or {},
    )
    for instance in reservation.instances:
        instance.autoscaling_group = group
        group.instance_states.append(
            InstanceState(instance, protected_from_scale_in=group.new_instances_protected_from_scale_in))
    log.info("group %s: launched %d spot %s in %s at $%.4f/h", group.name, count, instance_type, zone, price)


def _resolve_image(group: Any, image_id: str) -> str:
    """`resolve:ssm:NAME` -> the parameter's value, as EC2 resolves it at launch."""
    if not image_id or not image_id.startswith("resolve:ssm:"):
        return image_id
    from moto.ssm.models import ssm_backends

    backend = ssm_backends[group.autoscaling_backend.account_id][group.autoscaling_backend.region_name]
    parameter = backend.get_parameter(image_id.removeprefix("resolve:ssm:"))
    return parameter.value if parameter is not None else image_id
