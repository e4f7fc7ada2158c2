"""The sandbox's spot price table: realistic, fixed, and NOT LIVE.

moto answers DescribeSpotPriceHistory with a constant, which would make placement meaningless. The
sandbox daemon serves this table through the normal EC2 API instead, so the placement code is exercised
unchanged. The numbers are typical us-east-1 spot prices (USD/hour, Linux) rounded and frozen; the
per-AZ spread is deliberate so that "cheapest AZ" has an answer. Never use them for real decisions.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

PRODUCT = "Linux/UNIX"
VPC_PRODUCT = "Linux/UNIX (Amazon VPC)"

# Base spot price per type (USD/hour), then a per-AZ multiplier: a fixed, plausible spread.
BASE_PRICE: dict[str, float] = {
    "t3.medium": 0.0125,
    "t3.large": 0.0250,
    "c5.large": 0.0340,
    "m5.large": 0.0390,
    "c6i.xlarge": 0.0680,
    "m6i.xlarge": 0.0760,
    "r5.xlarge": 0.0900,
    "g4dn.xlarge": 0.2200,
    "g4dn.2xlarge": 0.3100,
    "g5.xlarge": 0.3900,
    "g5.2xlarge": 0.4800,
    "g6.xlarge": 0.3500,
    "p3.2xlarge": 0.9200,
}
AZ_FACTOR: dict[str, float] = {"a": 1.00, "b": 0.93, "c": 1.08, "d": 0.97, "e": 1.21, "f": 1.04}
# Types a zone does not offer (as on AWS, not every AZ has every GPU type).
NOT_OFFERED: set[tuple[str, str]] = {("p3.2xlarge", "e"), ("p3.2xlarge", "f"), ("g5.2xlarge", "e"), ("g6.xlarge", "e")}
ZONE_LETTERS = "abcdef"


def zones(region: str) -> list[str]:
    """Default AZ names for a region when the caller does not know them (moto's us-east-1 has a-f)."""
    letters = ZONE_LETTERS if region == "us-east-1" else ZONE_LETTERS[:3]
    return [region + letter for letter in letters]


def price(instance_type: str, availability_zone: str) -> float | None:
    """The table's price for a type in an AZ, or None when the AZ does not offer the type."""
    base = BASE_PRICE.get(instance_type)
    letter = availability_zone[-1:]
    if base is None or letter not in AZ_FACTOR or (instance_type, letter) in NOT_OFFERED:
        return None
    # Small per-type wobble so that AZ order is not identical for every type.
    wobble = 1.0 + ((sum(map(ord, instance_type)) + ord(letter)) % 7 - 3) / 100.0
    return round(base * AZ_FACTOR[letter] * wobble, 4)


def history(
    zone_names: Iterable[str],
    now: datetime,
    instance_types: Iterable[str] = (),
    availability_zone: str | None = None,
    product_descriptions: Iterable[str] = (),
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> list[dict[str, str]]:
    """SpotPriceHistory entries as EC2 returns them, filtered as EC2 filters them.

    One price point per (type, AZ, product), timestamped an hour before `now` (EC2 returns the price in
    effect at StartTime even when it was set earlier, so a recent StartTime still gets an answer).
    """
    types = list(instance_types) or sorted(BASE_PRICE)
    products = list(product_descriptions) or [PRODUCT, VPC_PRODUCT]
    stamp = now.astimezone(timezone.utc) - timedelta(hours=1)
    if end_time is not None and end_time.astimezone(timezone.utc) < stamp:
        return []  # asked for a window that ends before the table's price took effect
    del start_time  # every StartTime sees the price in effect (see above)
    rows: list[dict[str, str]] = []
    for az in zone_names:
        if availability_zone and az != availability_zone:
            continue
        for instance_type in types:
            value = price(instance_type, az)
            if value is None:
                continue
            for product in products:
                if product not in (PRODUCT, VPC_PRODUCT):
                    continue
                rows.append(
                    {
                        "AvailabilityZone": az,
                        "InstanceType": instance_type,
                        "ProductDescription": product,
                        "SpotPrice": f"{value:.6f}",
                        "Timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    }
                )
    return rows


def apply_filters(rows: list[dict[str, str]], filters: dict[str, list[str]]) -> list[dict[str, str]]:
    """EC2's Filter.N for DescribeSpotPriceHistory (availability-zone, instance-type, product-description)."""
    keys = {
        "availability-zone": "AvailabilityZone",
        "instance-type": "InstanceType",
        "product-description": "ProductDescription",
        "spot-price": "SpotPrice",
    }
    for name, values in filters.items():
        key = keys.get(name)
        if key is None or not values:
            continue
        rows = [r for r in rows if r[key] in values]
    return rows
