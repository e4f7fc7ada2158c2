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
