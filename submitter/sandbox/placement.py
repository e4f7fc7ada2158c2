"""The sandbox's placement data: GetSpotPlacementScores emulated from the price table, and its own copy of the
Spot Instance Advisor document. Both are FIXED RULES, NOT AWS's data; docs/sandbox.md says how they differ.

Scores (moto has no GetSpotPlacementScores): per AZ, over the requested types the AZ offers, how far the AZ's
price sits above the cheapest AZ's (the table's AZ spread stands in for spare capacity: AWS prices rise where
capacity is short). score = 10 - round(20 x (mean price ratio - 1)) - 3 per requested type the AZ does not offer
- 1 per order of magnitude of target capacity over 10, clamped to 1..10; an AZ offering none of the types gets no
score. Single-AZ answers only name AZs by id, best first, at most ten (as EC2 does); a region-level request gets
one score for the sandbox's region. Unlike AWS, one or two types are not scored low on that ground alone.

Advisor bands: a fixed band per type of the price table (GPU types reclaimed more, as the live page tends to
show), served in the live document's shape for the sandbox's region.
"""

from __future__ import annotations

import math
from typing import Any

from submitter.sandbox import prices

# Spot Instance Advisor range index per type (0 "<5%" ... 4 ">20%"): a fixed, plausible spread.
ADVISOR_BAND: dict[str, int] = {
    "t3.medium": 0, "t3.large": 0, "c5.large": 0, "m5.large": 0, "c6i.xlarge": 1, "m6i.xlarge": 0,
    "r5.xlarge": 1, "g4dn.xlarge": 1, "g4dn.2xlarge": 2, "g5.xlarge": 2, "g5.2xlarge": 3, "g6.xlarge": 2,
    "p3.2xlarge": 4,
}
RANGES = [  # the live document's "ranges" (its "max" values are the live file's too)
    {"index": 0, "label": "<5%", "dots": 0, "max": 5},
    {"index": 1, "label": "5-10%", "dots": 1, "max": 11},
    {"index": 2, "label": "10-15%", "dots": 2, "max": 16},
    {"index": 3, "label": "15-20%", "dots": 3, "max": 22},
    {"index": 4, "label": ">20%", "dots": 4, "max": 100},
]
ON_DEMAND_FACTOR = 3.0  # the table's spot prices are about a third of on-demand: the "s" (savings %) figure


def zone_score(instance_types: list[str], zone: str, zone_names: list[str], target_capacity: int) -> int | None:
    """The emulated single-AZ score of `zone` (see the module docstring), None when it offers none of the types."""
    ratios, missing = [], 0
    for instance_type in instance_types:
        here = prices.price(instance_type, zone)
        offered = [p for p in (prices.price(instance_type, z) for z in zone_names) if p is not None]
        if here is None or not offered:
            missing += 1
            continue
        ratios.append(here / min(offered))
    if not ratios:
        return None
    capacity = max(0, math.floor(math.log10(max(1, target_capacity) / 10)) + 1) if target_capacity > 10 else 0
    score = 10 - round(20 * (sum(ratios) / len(ratios) - 1)) - 3 * missing - capacity
    return max(1, min(10, score))


def scores(instance_types: list[str], zones: list[tuple[str, str]], region: str, region_names: list[str],
           single_az: bool, target_capacity: int) -> list[dict[str, Any]]:
    """GetSpotPlacementScores' SpotPlacementScores for `zones` [(name, id)] of the sandbox's `region`."""
    if region_names and region not in region_names:
        return []
    names = [name for name, _ in zones]
    scored = [(s, zone_id) for name, zone_id in zones
              if (s := zone_score(instance_types, name, names, target_capacity)) is not None]
    if not single_az:
        best = max((s for s, _ in scored), default=None)
        return [] if best is None else [{"Region": region, "Score": best}]
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [{"Region": region, "AvailabilityZoneId": zone_id, "Score": s} for s, zone_id in scored[:10]]


def advisor_document(region: str) -> dict[str, Any]:
    """The sandbox's Spot Instance Advisor document, in the live one's shape, for `region` (Linux only)."""
    linux = {t: {"s": round(100 * (1 - 1 / ON_DEMAND_FACTOR)), "r": band} for t, band in sorted(ADVISOR_BAND.items())}
    return {"ranges": RANGES, "global_rate": "<5%", "spot_advisor": {region: {"Linux": linux}},
            "instance_types": {t: {"emr": False} for t in sorted(ADVISOR_BAND)}}


def install() -> None:
    """Give moto's EC2 a GetSpotPlacementScores answering from `scores` (in the daemon's process only)."""
    from moto.core.responses import ActionResult
    from moto.ec2.responses.spot_instances import SpotInstances

    def get_spot_placement_scores(self: Any) -> ActionResult:
        zones = [(z.name, z.zone_id) for z in self.ec2_backend.describe_availability_zones()]
        found = scores(
            list(self._get_param("InstanceTypes", []) or []), zones, self.region,
            list(self._get_param("RegionNames", []) or []), bool(self._get_bool_param("SingleAvailabilityZone")),
            int(self._get_int_param("TargetCapacity") or 1))
        return ActionResult({"SpotPlacementScores": found})

    SpotInstances.get_spot_placement_scores = get_spot_placement_scores  # type: ignore[attr-defined]
