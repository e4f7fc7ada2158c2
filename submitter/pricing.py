"""On-demand reference prices, for the "savings against on-demand" comparison only.

Published EC2 Linux on-demand prices in us-east-1 (USD per hour), as listed by AWS in 2024. Never used
to decide anything: placement reads live spot prices. Other regions and types answer "unknown".
"""

from __future__ import annotations

ON_DEMAND_US_EAST_1: dict[str, float] = {
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "c5.large": 0.085,
    "c5.xlarge": 0.17,
    "c6i.xlarge": 0.17,
    "m5.large": 0.096,
    "m5.xlarge": 0.192,
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g6.xlarge": 0.8048,
    "p3.2xlarge": 3.06,
}
EBS_GP3_GB_MONTH_US_EAST_1 = 0.08
HOURS_PER_MONTH = 730.0


def on_demand(region: str, instance_type: str) -> float | None:
    return ON_DEMAND_US_EAST_1.get(instance_type) if region == "us-east-1" else None


def ebs_per_hour(region: str, volume_gb: int) -> float:
    """gp3 storage per hour; the us-east-1 rate is used as the estimate elsewhere too."""
    return volume_gb * EBS_GP3_GB_MONTH_US_EAST_1 / HOURS_PER_MONTH
