"""The choice of the group's pools, pure: rank the pools under max_price by expected cost, drop the risky ones
(a high interruption band, a low placement score, more expected interruptions than the retries allow) unless
nothing else is left, keep those within MARGIN of the best, and map the kept pools onto what an Auto Scaling
group can express: instance types (its overrides) x availability zones (its subnets). docs/decisions.md
("Placement: which pools the group may use") gives the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from submitter.placement import model

if TYPE_CHECKING:
    from submitter.plan import Placement

MARGIN = 0.20  # keep pools whose expected cost (high end) is within 20 % of the best pool's
HIGH_BAND = 3  # Spot Advisor band index 3 ("15-20%") and 4 (">20%") are high
LOW_SCORE = 3  # a Spot Placement Score of 1-3 (of 10): a request there is unlikely to succeed
PRIORITIZED = "capacity-optimized-prioritized"
PRICE_CAPACITY = "price-capacity-optimized"


@dataclass(frozen=True)
class Choice:
    kept: list[Placement]  # best first
    dropped: list[tuple[Placement, str]]  # with the reason
    strategy: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def risk(p: Placement, retries: int) -> str | None:
    """Why a pool is too risky to use while others fit, or None."""
    reasons = []
    if p.band is not None and p.band.index >= HIGH_BAND:
        reasons.append(f"interruption band {p.band.label} a month (Spot Advisor; {HIGH_BAND}+ of 0-4 is high)")
    if p.score is not None and p.score <= LOW_SCORE:
        reasons.append(f"placement score {p.score}/10 (at most {LOW_SCORE} is low)")
    if p.expected is not None:
        if p.expected.unusable:
            reasons.append(p.expected.unusable)
        else:
            why = model.at_risk_of_retries(p.expected, retries)
            if why:
                reasons.append(why)
    return "; ".join(reasons) or None


def _key(p: Placement) -> tuple[float, float, float, str, str]:
    e = p.expected
    high = e.cost_high if e else p.spot_price
    low = e.cost_low if e else p.spot_price
    return high, low, p.spot_price, p.instance_type, p.availability_zone


def choose(eligible: list[Placement], retries: int) -> Choice:
    """The kept pools (best first), the dropped ones with reasons, and the group's strategy.

    `eligible`: the pools at or under max_price, each with its expected cost."""
    notes: list[str] = []
    risky = {(p.instance_type, p.availability_zone): why for p in eligible if (why := risk(p, retries))}
    safe = [p for p in eligible if (p.instance_type, p.availability_zone) not in risky]
    dropped: list[tuple[Placement, str]] = []
    if safe:
        dropped += [(p, f"risky: {risky[(p.instance_type, p.availability_zone)]}") for p in eligible if p not in safe]
        pool = safe
    else:
        pool = list(eligible)
        if risky:
            notes.append("every pool under max_price is risky (see each pool's figures): kept anyway, ranked by "
                         "expected cost")
    pool.sort(key=_key)
    best = pool[0]
    limit = _key(best)[0] * (1 + MARGIN)
    kept = [p for p in pool if _key(p)[0] <= limit + 1e-12]
    dropped += [(p, f"expected cost over {MARGIN:.0%} above the best pool's ({_money(_key(p)[0])} vs "
                    f"{_money(_key(best)[0])} per run at the high end)") for p in pool if p not in kept]
    kept, dropped, stuck = _reach(kept, dropped, set(risky))
    types = list(dict.fromkeys(p.instance_type for p in kept))
    zones = sorted({p.availability_zone for p in kept})
    known = any(p.band is not None or p.score is not None or p.observed is not None for p in eligible)
    reachable = sorted(f"{p.instance_type}/{p.availability_zone}" for p, _ in dropped
                       if p.instance_type in types and p.availability_zone in zones)
    if stuck:
        notes.append(f"the group can still launch {', '.join(stuck)} (dropped): leaving it out would leave no "
                     "kept pool")
    strategy = {
        "allocation": PRIORITIZED if known else PRICE_CAPACITY,
        "why": ("overrides ordered by expected cost, which counts interruption risk that AWS's price-capacity "
                "strategy does not see; every kept pool is within the margin, so AWS may favour capacity"
                if known else "no score, band or record of ours for any pool: AWS's price and capacity view is "
                              "better than a ranking by price alone"),
        "types": types,
        "zones": zones,
        "margin": MARGIN,
        "high_band_index": HIGH_BAND,
        "low_score": LOW_SCORE,
        "reachable_not_kept": reachable,
    }
    return Choice(kept, dropped, strategy, notes)


def _reach(kept: list[Placement], dropped: list[tuple[Placement, str]], risky: set[tuple[str, str]]
           ) -> tuple[list[Placement], list[tuple[Placement, str]], list[str]]:
    """A group reaches every kept type in every kept zone: where that includes a risky pool, leave out its type
    or its zone (whichever loses fewer kept pools; never the last one), moving the kept pools it loses to
    dropped. Returns the risky pools that stay reachable because leaving them out would leave nothing."""
    stuck: list[str] = []
    while True:
        types = {p.instance_type for p in kept}
        zones = {p.availability_zone for p in kept}
        chosen = {(p.instance_type, p.availability_zone) for p in kept}  # all risky: kept anyway, not cut
        inside = [(t, z) for t, z in sorted(risky) if t in types and z in zones
                  and (t, z) not in chosen and f"{t}/{z}" not in stuck]
        if not inside:
            return kept, dropped, stuck
        t, z = inside[0]
        by_type = [p for p in kept if p.instance_type == t]
        by_zone = [p for p in kept if p.availability_zone == z]
        options = [(len(lost), what, lost) for what, lost in ((f"type {t}", by_type), (f"zone {z}", by_zone))
                   if len(lost) < len(kept)]
        if not options:
            stuck.append(f"{t}/{z}")
            continue
        _, what, lost = min(options, key=lambda o: o[0])
        kept = [p for p in kept if p not in lost]
        dropped += [(p, f"{what} left out of the group so that the risky pool {t}/{z} cannot be launched")
                    for p in lost]


def _money(value: float) -> str:
    return "unbounded" if value == float("inf") else f"${value:.4f}"
