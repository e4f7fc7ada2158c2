"""The choice of the group's pools (submitter/placement/rank.py): ranked by expected cost, risky pools dropped
unless nothing else fits, a margin around the best, and the mapping onto types x zones."""

from __future__ import annotations

from submitter.placement import model, rank
from submitter.placement.facts import Band, Observed, PoolFacts
from submitter.placement.model import Figure, JobInputs
from submitter.plan import Placement

JOB = JobInputs(Figure(2.0, "test"), Figure(None, "test"), Figure({"first_s": 0.0, "restart_s": 0.0,
                                                                     "final_s": 0.0}, "test"), 3, None)
LOW, HIGH = Band(0, "<5%", 0.0, 0.05), Band(4, ">20%", 0.2, 1.0)


def _pool(t: str, z: str, price: float, *, band: Band | None = LOW, score: int | None = 9,
          observed: Observed | None = None) -> Placement:
    facts = PoolFacts(score, band, observed)
    return Placement(t, z, price, None, score, band, observed,
                     model.expected(price, 0.0, model.rate_of(facts), JOB))


def _names(pools: list[Placement]) -> list[str]:
    return [f"{p.instance_type}/{p.availability_zone}" for p in pools]


def test_kept_within_the_margin_best_first() -> None:
    # the same band everywhere, so the expected cost follows the price: 0.115 is 15 % over 0.10, 0.13 is 30 %
    choice = rank.choose([_pool("m5.large", "a", 0.13), _pool("c5.large", "a", 0.10), _pool("c5.large", "b", 0.115)],
                         retries=3)
    assert _names(choice.kept) == ["c5.large/a", "c5.large/b"]
    assert [(f"{p.instance_type}/{p.availability_zone}", why.split(" (")[0]) for p, why in choice.dropped] == [
        ("m5.large/a", "expected cost over 20% above the best pool's")]
    assert choice.strategy["allocation"] == rank.PRIORITIZED
    assert choice.strategy["types"] == ["c5.large"] and choice.strategy["zones"] == ["a", "b"]
    # the margin-dropped m5.large is outside the group: its type has no kept pool
    assert choice.strategy["reachable_not_kept"] == []


def test_a_high_band_or_low_score_is_dropped_while_others_fit() -> None:
    cheap_risky = _pool("c5.large", "a", 0.05, band=HIGH)
    low_score = _pool("m5.large", "a", 0.06, score=2)
    safe = _pool("r5.large", "a", 0.20)
    choice = rank.choose([cheap_risky, low_score, safe], retries=3)
    assert _names(choice.kept) == ["r5.large/a"]
    reasons = {f"{p.instance_type}/{p.availability_zone}": why for p, why in choice.dropped}
    assert reasons["c5.large/a"].startswith("risky: interruption band >20%")
    assert "placement score 2/10" in reasons["m5.large/a"]
    assert choice.strategy["types"] == ["r5.large"]


def test_risky_pools_are_kept_when_nothing_else_fits() -> None:
    choice = rank.choose([_pool("c5.large", "a", 0.05, band=HIGH)], retries=3)
    assert _names(choice.kept) == ["c5.large/a"] and choice.dropped == []
    assert any("every pool under max_price is risky" in n for n in choice.notes)


def test_a_pool_that_keeps_being_reclaimed_is_dropped() -> None:
    # our own record: 30 interruptions in 12 instance-hours, a rate of 2.5/h to 3.5/h; 2 h without checkpoints
    # expects e^5 - 1 = 147 interruptions at the low end, more than 3 retries: unusable
    reclaimed = _pool("c5.large", "a", 0.05, observed=Observed(30, 12.0))
    choice = rank.choose([reclaimed, _pool("c5.large", "b", 0.07)], retries=3)
    assert _names(choice.kept) == ["c5.large/b"]
    (pool, why), = choice.dropped
    assert pool.availability_zone == "a" and "more than retries.on_interruption (3)" in why


def test_a_risky_pool_inside_types_x_zones_is_cut_out_of_the_group() -> None:
    # kept: c5/a and m5/b; c5/b is risky, but a group over {c5, m5} x {a, b} could launch it. Leaving out type c5
    # or zone b loses one kept pool either way; the type goes first (tie), so the group is m5 in b only.
    pools = [_pool("c5.large", "a", 0.10), _pool("m5.large", "b", 0.10), _pool("c5.large", "b", 0.05, band=HIGH)]
    choice = rank.choose(pools, retries=3)
    types, zones = choice.strategy["types"], choice.strategy["zones"]
    assert ("c5.large" in types and "b" in zones) is False
    assert _names(choice.kept) == ["m5.large/b"]
    reasons = {f"{p.instance_type}/{p.availability_zone}": why for p, why in choice.dropped}
    assert reasons["c5.large/a"] == "type c5.large left out of the group so that the risky pool c5.large/b cannot " \
                                    "be launched"


def test_nothing_known_keeps_aws_price_capacity_strategy() -> None:
    unknown = [_pool("c5.large", "a", 0.10, band=None, score=None), _pool("c5.large", "b", 0.11, band=None, score=None)]
    choice = rank.choose(unknown, retries=3)
    assert choice.strategy["allocation"] == rank.PRICE_CAPACITY
    assert _names(choice.kept) == ["c5.large/a", "c5.large/b"]


def test_when_every_pool_is_risky_none_of_them_is_cut_out_of_the_group() -> None:
    # all four risky (band >20%): all kept and ranked; no zone or type is left out for a kept pool's sake
    pools = [_pool(t, z, price, band=HIGH) for t, z, price in
             (("c5.large", "a", 0.05), ("c5.large", "b", 0.051), ("m5.large", "a", 0.052), ("m5.large", "b", 0.053))]
    choice = rank.choose(pools, retries=3)
    assert sorted(_names(choice.kept)) == ["c5.large/a", "c5.large/b", "m5.large/a", "m5.large/b"]
    assert choice.dropped == []
    assert choice.strategy["zones"] == ["a", "b"] and set(choice.strategy["types"]) == {"c5.large", "m5.large"}


def test_retries_are_exhausted_when_that_is_the_likelier_outcome() -> None:
    # Poisson with mean n: P(N > 0) = 1 - e^-n, over 1/2 from n = ln 2 = 0.693
    assert not model.exhausts_retries(0.01, 0) and not model.exhausts_retries(0.69, 0)
    assert model.exhausts_retries(0.70, 0)
    # P(N > 3) = 1 - e^-n (1 + n + n^2/2 + n^3/6): n = 3.68 gives 1 - 0.025223 x 19.757 = 0.502; n = 3.6 gives
    # 1 - 0.027324 x 18.856 = 0.485
    assert model.exhausts_retries(3.68, 3) and not model.exhausts_retries(3.6, 3)
    assert model.exhausts_retries(float("inf"), 20)
