"""The plan's placement and expected cost (issue 17): the JSON every pool carries, the kept and dropped pools,
the expected cost next to the worst case, the offline plan, and the group built from the chosen pools."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from submitter import backends
from submitter.aws.ec2 import SpotPrice
from submitter.backends.pool import pool_plan
from submitter.placement.facts import Band, JobHistory, Market, Observed, PoolFacts
from submitter.plan import Plan, make_plan
from submitter.settings import Settings
from submitter.spec import load

NOW = datetime(2026, 11, 26, 7, 0, 0, tzinfo=timezone.utc)
SPEC = """\
name: exp1
command: [python, train.py]
resources:
  instance_types: [c5.large, m5.large]
  max_price: 0.05
limits: {max_runtime: 2h}
sweep:
  LR: [0.1, 0.01, 0.001, 0.0001]
queue: {max_workers: 2}
"""
POOL_KEYS = {"instance_type", "availability_zone", "spot_price", "on_demand", "savings", "score", "band", "observed",
             "expected_cost"}
LOW, HIGH = Band(0, "<5%", 0.0, 0.05), Band(4, ">20%", 0.2, 1.0)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile.train").write_text("FROM python:3.11-slim\nCOPY train.py /app/\n")
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "job.yaml").write_text(SPEC)
    return tmp_path


def _plan(project: Path, market: Market) -> Plan:
    return make_plan(load(project / "job.yaml"), Settings(bucket="bkt"), market, now=NOW, token="abc123")


def _market(history: JobHistory | None = None) -> Market:
    prices = [SpotPrice("c5.large", "us-east-1a", 0.030, NOW), SpotPrice("m5.large", "us-east-1a", 0.032, NOW),
              SpotPrice("c5.large", "us-east-1b", 0.020, NOW), SpotPrice("m5.large", "us-east-1b", 0.033, NOW),
              SpotPrice("m5.large", "us-east-1c", 0.090, NOW)]  # over max_price
    facts = {("c5.large", "us-east-1a"): PoolFacts(9, LOW, Observed(0, 3.0)),
             ("m5.large", "us-east-1a"): PoolFacts(8, LOW, None),
             ("c5.large", "us-east-1b"): PoolFacts(9, HIGH, None),  # cheapest, but reclaimed often
             ("m5.large", "us-east-1b"): PoolFacts(2, LOW, None)}  # a low placement score
    return Market(prices, "test prices", None, facts, history or JobHistory(), ["scores: test", "bands: test"])


def test_every_pool_carries_the_four_figures_and_its_expected_cost(project: Path) -> None:
    doc = _plan(project, _market()).to_json()["placement"]
    candidates = doc["candidates"]
    assert [(c["instance_type"], c["availability_zone"]) for c in candidates] == [
        ("c5.large", "us-east-1a"), ("m5.large", "us-east-1a")]
    for pool in candidates + doc["dropped"] + doc["excluded_over_max_price"]:
        assert set(pool) >= POOL_KEYS
    first = candidates[0]
    assert first["score"] == 9 and first["band"] == {"index": 0, "label": "<5%"}
    assert first["observed"] == {"interruptions": 0, "instance_hours": 3.0, "rate": 0.0}
    assert 0 < first["expected_cost"]["low"] <= first["expected_cost"]["high"]
    reasons = {(d["instance_type"], d["availability_zone"]): d["reason"] for d in doc["dropped"]}
    assert reasons[("c5.large", "us-east-1b")].startswith("risky: interruption band >20%")
    assert "placement score 2/10" in reasons[("m5.large", "us-east-1b")]
    assert [e["availability_zone"] for e in doc["excluded_over_max_price"]] == ["us-east-1c"]
    assert doc["strategy"]["allocation"] == "capacity-optimized-prioritized"
    assert doc["strategy"]["zones"] == ["us-east-1a"] and doc["notes"] == ["scores: test", "bands: test"]


def test_the_group_uses_the_chosen_pools(project: Path) -> None:
    plan = _plan(project, _market())
    group = pool_plan(plan).group
    policy = group["MixedInstancesPolicy"]
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == ["c5.large", "m5.large"]
    assert policy["InstancesDistribution"]["SpotAllocationStrategy"] == "capacity-optimized-prioritized"
    assert policy["InstancesDistribution"]["SpotMaxPrice"] == "0.0500"  # max_price stays a hard cap
    assert group["AvailabilityZones"] == ["us-east-1a"]  # zone b held only risky pools


def test_expected_cost_sits_next_to_the_worst_case(project: Path) -> None:
    estimate = _plan(project, _market()).estimate
    assert isinstance(estimate["total_at_most"], float)  # the worst-case keys stay
    expected = estimate["expected"]
    assert {"cost_low", "cost_high", "hours_low", "hours_high", "per_run", "inputs"} <= set(expected)
    assert 0 < expected["cost_low"] <= expected["cost_high"]
    # 4 runs, 2 workers: two waves of 2 h of work plus start and end
    assert expected["waves"] == 2 and 4.0 < expected["hours_low"] <= expected["hours_high"]
    # no history: the runtime is limits.max_runtime, the worst case, and the inputs say so
    assert expected["inputs"]["runtime_hours"]["value"] == 2.0
    assert "max_runtime" in expected["inputs"]["runtime_hours"]["source"]
    assert "no checkpoints" in expected["inputs"]["checkpoint_hours"]["source"]


def test_earlier_runs_give_the_runtime(project: Path) -> None:
    plan = _plan(project, _market(JobHistory(runtimes_s=[1800, 2400, 3600])))
    runtime = plan.estimate["expected"]["inputs"]["runtime_hours"]
    assert runtime == {"value": 0.6667, "source": "median of 3 earlier succeeded run(s) of this job"}
    assert plan.estimate["expected"]["cost_high"] < plan.estimate["total_at_most"]


def test_offline_plan_says_no_scores_were_read(project: Path) -> None:
    plan = _plan(project, Market(None, "spot prices unknown (no AWS credentials)"))
    doc = backends.dry_run(plan)
    placement = doc["placement"]
    assert placement["candidates"] == [] and placement["dropped"] == []
    assert "no spot prices, placement scores, interruption bands or records of ours were read" in placement["notes"][0]
    assert placement["strategy"]["allocation"] == "price-capacity-optimized"
    group = doc["launch"]["auto_scaling_group"]
    assert [o["InstanceType"] for o in group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]] == [
        "c5.large", "m5.large"]
    expected = doc["estimate"]["expected"]
    assert "max_price" in expected["basis"] and expected["cost_high"] > 0
    assert expected["inputs"]["spot_price"]["source"].startswith("resources.max_price")
    assert doc["estimate"]["total_at_most"] == "unknown"


def test_the_human_plan_shows_the_top_pools_and_expected_vs_worst_case(project: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from submitter import render

    render.plan(_plan(project, _market()))
    out = capsys.readouterr().out
    assert "pools the group uses, best expected cost first" in out
    assert "9/10" in out and "<5%" in out and "0 in 3.0 h" in out  # score, band, our record
    assert "dropped c5.large/us-east-1b: risky: interruption band >20%" in out
    assert "group: capacity-optimized-prioritized over c5.large, m5.large in us-east-1a" in out
    assert "cost: at most $" in out and "expected: $" in out
    assert "runtime_hours: 2.0 (limits.max_runtime" in out


def test_an_unbounded_expectation_is_null_in_strict_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from submitter import render

    market = _market()
    # 50 interruptions in one hour of ours: the high end is 50/h; 2 h without checkpoints is e^100: unbounded
    market.facts[("c5.large", "us-east-1a")] = PoolFacts(9, LOW, Observed(50, 1.0))
    plan = _plan(project, market)
    doc = json.loads(json.dumps(plan.to_json(), allow_nan=False))
    dropped = {(d["instance_type"], d["availability_zone"]): d for d in doc["placement"]["dropped"]}
    unbounded = dropped[("c5.large", "us-east-1a")]
    assert unbounded["expected_cost"]["high"] is None and "interruptions per run" in unbounded["reason"]
    render.plan(plan)
    assert "dropped c5.large/us-east-1a" in capsys.readouterr().out
