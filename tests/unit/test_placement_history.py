"""placement/history.py's arithmetic (hand-worked) and the sandbox's placement rules (sandbox/placement.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from submitter.placement import advisor, history
from submitter.placement.facts import Observed
from submitter.sandbox import placement

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def _report(state: str, minutes: float | None, pool: tuple[str, str] = ("c5.large", "us-east-1b")) -> dict:
    doc = {"instance_type": pool[0], "availability_zone": pool[1], "state": state,
           "time": (T0 + timedelta(minutes=minutes or 0)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if minutes is not None:
        doc["booted_at"] = T0.strftime("%Y-%m-%dT%H:%M:%SZ")
    return doc


def test_rate_is_interruptions_per_instance_hour() -> None:
    # Pool b: interrupted after 30 min, interrupted after 15 min, drained after 75 min:
    # 2 interruptions / (0.5 + 0.25 + 1.25 = 2.0 h) = 1.0 per instance-hour.
    # Pool d: one drained instance of 2 h: 0 interruptions over 2 h.
    reports = [history.Report.of(d) for d in (
        _report("interrupted", 30), _report("interrupted", 15), _report("drained", 75),
        _report("drained", 120, ("c5.large", "us-east-1d")))]
    found = history.rates(r for r in reports if r)
    assert found == {("c5.large", "us-east-1b"): Observed(2, 2.0), ("c5.large", "us-east-1d"): Observed(0, 2.0)}
    assert found[("c5.large", "us-east-1b")].rate == pytest.approx(1.0)
    assert found[("c5.large", "us-east-1d")].rate == 0.0


def test_a_report_without_booted_at_counts_its_interruption_but_no_hours() -> None:
    report = history.Report.of(_report("interrupted", None))
    assert report is not None and report.interrupted and report.hours == 0.0
    only = history.rates([report])[("c5.large", "us-east-1b")]
    assert only == Observed(1, 0.0) and only.rate is None  # no hour on record: no rate


@pytest.mark.parametrize("doc", [None, [], {"state": "drained"}, {"instance_type": "c5.large"}])
def test_a_report_without_its_pool_is_ignored(doc: object) -> None:
    assert history.Report.of(doc) is None


def test_a_report_ending_before_it_booted_counts_no_hours() -> None:
    doc = {**_report("drained", 10), "booted_at": (T0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    report = history.Report.of(doc)
    assert report is not None and report.hours == 0.0


def test_checkpoint_interval_is_the_median_spacing_of_syncs() -> None:
    # Syncs at 0 s (3 objects within 2 s), 600 s, 1300 s (2 objects), 1900 s: gaps 598, 700, 600 -> median 600.
    seconds = [0, 1, 2, 600, 1299, 1300, 1900]
    assert history.sync_interval(T0 + timedelta(seconds=s) for s in seconds) == 600
    assert history.sync_interval([T0, T0 + timedelta(seconds=3)]) is None  # one sync only
    assert history.sync_interval([]) is None


ZONES = [("us-east-1a", "use1-az6"), ("us-east-1b", "use1-az1"), ("us-east-1c", "use1-az2"),
         ("us-east-1d", "use1-az4"), ("us-east-1e", "use1-az3"), ("us-east-1f", "use1-az5")]
NAMES = [n for n, _ in ZONES]


def test_sandbox_score_falls_with_the_zones_price_above_the_cheapest() -> None:
    # c5.large: b is the cheapest AZ (0.0307) -> ratio 1 -> 10; e is 0.0411 -> ratio 1.339 -> 10 - round(6.78) = 3.
    assert placement.zone_score(["c5.large"], "us-east-1b", NAMES, 1) == 10
    assert placement.zone_score(["c5.large"], "us-east-1e", NAMES, 1) == 3
    # p3.2xlarge is not offered in f: 3 off per missing type; an AZ offering none of the types has no score.
    assert placement.zone_score(["p3.2xlarge"], "us-east-1f", NAMES, 1) is None
    assert placement.zone_score(["c5.large"], "us-east-1f", NAMES, 1) == 7
    assert placement.zone_score(["c5.large", "p3.2xlarge"], "us-east-1f", NAMES, 1) == 7 - 3
    # 100 instances: one order of magnitude over 10 -> 2 off (log10(100/10) = 1, + 1).
    assert placement.zone_score(["c5.large"], "us-east-1b", NAMES, 100) == 8


def test_sandbox_scores_answer_like_ec2() -> None:
    single = placement.scores(["c5.large"], ZONES, "us-east-1", ["us-east-1"], True, 1)
    assert single[0] == {"Region": "us-east-1", "AvailabilityZoneId": "use1-az1", "Score": 10}
    assert [s["Score"] for s in single] == sorted((s["Score"] for s in single), reverse=True)
    assert placement.scores(["c5.large"], ZONES, "us-east-1", ["eu-west-1"], True, 1) == []
    assert placement.scores(["c5.large"], ZONES, "us-east-1", [], False, 1) == [{"Region": "us-east-1", "Score": 10}]


def test_sandbox_advisor_document_parses_as_the_live_one() -> None:
    found = advisor.parse(placement.advisor_document("us-east-1"), "us-east-1", ["c5.large", "p3.2xlarge"])
    assert (found["c5.large"].label, found["p3.2xlarge"].label) == ("<5%", ">20%")
