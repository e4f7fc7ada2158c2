"""The expected-cost model (submitter/placement/model.py) against hand-worked cases; the arithmetic is written out
so a reader can check it. Formula (docs/decisions.md, "Expected cost of a job"): a segment of x hours at r
interruptions per hour with a restart of D hours takes (1/r + D)(e^(r x) - 1) hours; a run is the first start +
its segments + the final upload, drain and exit; its cost is hours x (spot + EBS), cut at max_cost."""

from __future__ import annotations

import math

import pytest

from submitter.placement import model
from submitter.placement.facts import Band, Observed, PoolFacts
from submitter.placement.model import Figure, JobInputs, Rate

# A first start of 360 s and a final 180 s: 540 s = 0.15 h; a restart 720 s = 0.2 h.
OVERHEAD = Figure({"first_s": 360.0, "restart_s": 720.0, "final_s": 180.0}, "test")
PRICE, EBS = 0.10, 0.01  # $0.11 an hour in all


def _job(work_h: float, checkpoint_h: float | None, retries: int = 3, max_cost: float | None = None) -> JobInputs:
    return JobInputs(Figure(work_h, "test"), Figure(checkpoint_h, "test"), OVERHEAD, retries, max_cost)


def test_no_interruptions_is_price_times_runtime_plus_overhead() -> None:
    # 2 h of work + 0.15 h of start and end = 2.15 h; x $0.11 = $0.2365, at both ends of a zero rate.
    e = model.expected(PRICE, EBS, Rate(0.0, 0.0, "none"), _job(2.0, None))
    assert e.hours_low == e.hours_high == pytest.approx(2.15)
    assert e.cost_low == e.cost_high == pytest.approx(0.2365)
    assert e.interruptions_low == e.interruptions_high == 0
    assert e.unusable is None and not e.capped
    assert e.useful_hour_cost == pytest.approx((0.2365 / 2, 0.2365 / 2))


def test_a_known_rate_and_checkpoint_interval_follow_the_formula() -> None:
    # r = 0.1/h, checkpoints every 1 h, 2 h of work: two segments of 1 h.
    # one segment: (1/0.1 + 0.2) x (e^0.1 - 1) = 10.2 x 0.1051709 = 1.0727434 h, with 0.1051709 interruptions
    # run: 2 x 1.0727434 + 0.15 = 2.2954868 h; x $0.11 = $0.2525035; interruptions 0.2103418
    e = model.expected(PRICE, EBS, Rate(0.1, 0.1, "test"), _job(2.0, 1.0))
    assert e.hours_high == pytest.approx(2.2954868, abs=1e-6)
    assert e.cost_high == pytest.approx(0.2525035, abs=1e-6)
    assert e.interruptions_high == pytest.approx(0.2103418, abs=1e-6)


def test_without_checkpoints_an_interruption_loses_the_whole_attempt() -> None:
    # the same rate, no checkpoints: one segment of 2 h: 10.2 x (e^0.2 - 1) = 10.2 x 0.2214028 = 2.2583084 h
    # run: 2.2583084 + 0.15 = 2.4083084 h: more than with checkpoints (2.2954868 h above)
    e = model.expected(PRICE, EBS, Rate(0.1, 0.1, "test"), _job(2.0, None))
    assert e.hours_high == pytest.approx(2.4083084, abs=1e-6)
    assert e.interruptions_high == pytest.approx(0.2214028, abs=1e-6)
    # a range: the low end at r = 0 is the uninterrupted 2.15 h
    ranged = model.expected(PRICE, EBS, Rate(0.0, 0.1, "test"), _job(2.0, None))
    assert (ranged.hours_low, ranged.hours_high) == pytest.approx((2.15, 2.4083084), abs=1e-6)


def test_the_last_segment_is_the_rest_of_the_work() -> None:
    assert model.segments(2.5, 1.0) == pytest.approx([1.0, 1.0, 0.5])
    assert model.segments(2.0, None) == [2.0]
    assert model.segments(0.5, 1.0) == [0.5]


def test_max_cost_cuts_the_cost_and_says_so() -> None:
    # uninterrupted $0.2365 > max_cost $0.20: the runtime stops the run at $0.20
    e = model.expected(PRICE, EBS, Rate(0.0, 0.0, "none"), _job(2.0, None, max_cost=0.2))
    assert e.cost_high == pytest.approx(0.2) and e.capped
    assert e.unusable and "max_cost" in e.unusable


def test_a_rate_the_retries_cannot_absorb_makes_the_pool_unusable() -> None:
    # 2 interruptions an hour, 8 h without checkpoints: e^16 - 1 = 8.9 million interruptions expected
    e = model.expected(PRICE, EBS, Rate(2.0, 2.0, "test"), _job(8.0, None, retries=3))
    assert e.interruptions_low == pytest.approx(math.expm1(16))
    assert e.unusable and "retries.on_interruption (3)" in e.unusable
    # beyond e^50 the expectation is not a number worth showing: infinite, and the JSON says null
    never = model.expected(PRICE, EBS, Rate(0.0, 10.0, "test"), _job(8.0, None))
    assert math.isinf(never.hours_high) and never.to_json()["cost_high"] is None
    assert model.at_risk_of_retries(never, 3)


def test_band_conversion_month_low_day_high() -> None:
    # "<5%": low -ln(1 - 0)/730 = 0; high -ln(0.95)/24 = 0.0512933/24 = 0.0021372
    assert model.band_rate(Band(0, "<5%", 0.0, 0.05)) == pytest.approx((0.0, 0.0021372), abs=1e-7)
    # ">20%": low -ln(0.8)/730 = 0.2231436/730 = 0.0003057; high capped at a share of 0.5: ln 2 / 24 = 0.0288811
    assert model.band_rate(Band(4, ">20%", 0.2, 1.0)) == pytest.approx((0.0003057, 0.0288811), abs=1e-7)


def test_observed_rate_replaces_the_band_on_enough_hours() -> None:
    # 4 interruptions in 20 h: (4 - 2)/20 = 0.1 to (4 + 2 + 1)/20 = 0.35
    facts = PoolFacts(band=Band(0, "<5%", 0.0, 0.05), observed=Observed(4, 20.0))
    rate = model.rate_of(facts)
    assert (rate.low, rate.high) == pytest.approx((0.1, 0.35))
    assert rate.source.startswith("observed: 4 interruption(s) in 20.0")


def test_a_short_record_only_raises_the_high_end() -> None:
    # 3 interruptions in half an hour (under 10 h): the band's low end stays, the high end becomes 6/h
    rate = model.rate_of(PoolFacts(band=Band(0, "<5%", 0.0, 0.05), observed=Observed(3, 0.5)))
    assert (rate.low, rate.high) == pytest.approx((0.0, 6.0))
    # none in 2 h says nothing yet: the band alone
    quiet = model.rate_of(PoolFacts(band=Band(0, "<5%", 0.0, 0.05), observed=Observed(0, 2.0)))
    assert (quiet.low, quiet.high) == pytest.approx((0.0, 0.0021372), abs=1e-7)
    assert "too few hours" in quiet.source


def test_nothing_known_assumes_up_to_twenty_percent() -> None:
    # -ln(0.8)/24 = 0.0092977
    rate = model.rate_of(None)
    assert (rate.low, rate.high) == pytest.approx((0.0, 0.0092977), abs=1e-7)
    assert "assumed" in rate.source


def test_job_inputs_say_what_each_rests_on() -> None:
    # the median of 3600, 5400, 7200 s is 5400 s = 1.5 h; of 3600 and 7200 also 1.5 h
    odd = model.job_inputs(max_runtime_s=8 * 3600, runtimes_s=[7200, 3600, 5400], checkpoints=False,
                           checkpoint_interval_s=None, gpu=False, retries=3, max_cost=None)
    even = model.job_inputs(max_runtime_s=8 * 3600, runtimes_s=[3600, 7200], checkpoints=False,
                            checkpoint_interval_s=None, gpu=False, retries=3, max_cost=None)
    assert odd.runtime.value == even.runtime.value == 1.5 and "median of 3" in odd.runtime.source
    assert odd.checkpoint.value is None and "whole attempt" in odd.checkpoint.source
    # a CPU image of 500 MB: pull 500/80 + 500/100 = 11.25 s; first start 60 + 30 + 11.25 + 15 = 116.25 s;
    # the end 1000/80 + 2 (drain) + 5 = 19.5 s; no checkpoints, so a restart restores nothing
    assert odd.overhead.value == {"first_s": 116.2, "restart_s": 116.2, "final_s": 19.5}
    fresh = model.job_inputs(max_runtime_s=4 * 3600, runtimes_s=[], checkpoints=True, checkpoint_interval_s=None,
                             gpu=True, retries=3, max_cost=None)
    assert fresh.runtime.value == 4.0 and "max_runtime" in fresh.runtime.source
    assert fresh.checkpoint.value == 0.5 and "assumed" in fresh.checkpoint.source
    # a GPU image of 3500 MB: pull 43.75 + 35 = 78.75 s; first 183.75 s; a restart adds 1000/80 = 12.5 s
    assert fresh.overhead.value["first_s"] == pytest.approx(183.8, abs=0.06)
    assert fresh.overhead.value["restart_s"] == pytest.approx(196.2, abs=0.06)
    observed = model.job_inputs(max_runtime_s=3600, runtimes_s=[], checkpoints=True, checkpoint_interval_s=600,
                                gpu=False, retries=3, max_cost=None)
    assert observed.checkpoint.value == pytest.approx(600 / 3600, abs=1e-4) and "observed" in observed.checkpoint.source


def test_the_job_spans_its_pools_and_runs_in_waves() -> None:
    cheap = model.expected(0.10, EBS, Rate(0.0, 0.0, "none"), _job(2.0, None))  # $0.2365 a run
    dear = model.expected(0.20, EBS, Rate(0.0, 0.1, "test"), _job(2.0, None))  # $0.21 x 2.15 .. x 2.4083084
    job = model.for_job([cheap, dear], runs=6, workers=2)
    # cost: 6 x $0.2365 = $1.419 low; 6 x 0.21 x 2.4083084 = $3.0344686 high
    assert job["cost_low"] == pytest.approx(1.419, abs=1e-4)
    assert job["cost_high"] == pytest.approx(3.0345, abs=1e-4)
    # time: 3 waves of 2 runs: 3 x 2.15 = 6.45 h .. 3 x 2.4083084 = 7.2249 h
    assert job["waves"] == 3
    assert (job["hours_low"], job["hours_high"]) == pytest.approx((6.45, 7.2249), abs=1e-4)
    assert set(job["per_run"]) >= {"cost_low", "cost_high", "hours_low", "hours_high"}
    assert job["inputs"]["runtime_hours"] == {"value": 2.0, "source": "test"}
