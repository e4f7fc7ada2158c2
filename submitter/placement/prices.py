"""The `prices` command's rows, pure: per pool the four figures (spot price, placement score, interruption band,
our observed rate) and the expected $ per useful hour of a reference run (placement/model.py `reference_job`)."""

from __future__ import annotations

from typing import Any

from submitter.placement import model
from submitter.placement.facts import Market

VOLUME_GB = 30  # the spec's default resources.volume_gb: the EBS part of the reference run


def rows(market: Market, offers: list[dict[str, Any]], region: str) -> list[dict[str, Any]]:
    """`offers` (tracking.prices: price, on-demand, saving per pool) with the other figures added."""
    from submitter import pricing
    from submitter.plan import is_gpu

    ebs = pricing.ebs_per_hour(region, VOLUME_GB)
    out = []
    for o in offers:
        facts = market.facts.get((o["instance_type"], o["availability_zone"]))
        rate = model.rate_of(facts)
        e = model.expected(o["spot_price"], ebs, rate, model.reference_job(is_gpu(o["instance_type"])))
        low, high = e.useful_hour_cost
        band = facts.band if facts else None
        observed = facts.observed if facts else None
        out.append({
            **o,
            "score": facts.score if facts else None,
            "band": {"index": band.index, "label": band.label} if band else None,
            "observed": {"interruptions": observed.interruptions, "instance_hours": observed.instance_hours,
                         "rate": observed.rate} if observed else None,
            "interruption_rate": {"low": round(rate.low, 6), "high": round(rate.high, 6), "source": rate.source},
            "expected_per_useful_hour": {"low": _finite(low), "high": _finite(high)},
        })
    return out


def basis() -> str:
    return (f"expected $/useful-hour: a reference run of {model.REFERENCE_WORK_H:.0f} h of work, a checkpoint every "
            f"{model.CHECKPOINT_ASSUMED_S / 60:.0f} min, a {VOLUME_GB} GB volume and the on-paper restart overhead, "
            "billed hours x (spot + EBS) / hours of work (docs/decisions.md, Expected cost of a job)")


def _finite(value: float) -> float | None:
    """Strict JSON: an unbounded expectation is null."""
    return None if value == float("inf") else round(value, 5)
