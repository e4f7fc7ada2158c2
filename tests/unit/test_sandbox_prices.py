"""The sandbox's spot price table and how DescribeSpotPriceHistory's parameters filter it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from submitter.sandbox import prices

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
ZONES = prices.zones("us-east-1")


def test_every_known_type_has_a_price_in_several_zones_and_zones_differ() -> None:
    for instance_type in prices.BASE_PRICE:
        values = [prices.price(instance_type, z) for z in ZONES]
        offered = [v for v in values if v is not None]
        assert len(offered) >= 4, instance_type
        assert len(set(offered)) > 1, instance_type


def test_history_filters_by_type_zone_and_product() -> None:
    rows = prices.history(ZONES, NOW, instance_types=["g4dn.xlarge"], availability_zone="us-east-1b",
                          product_descriptions=["Linux/UNIX"])
    assert [(r["InstanceType"], r["AvailabilityZone"], r["ProductDescription"]) for r in rows] == [
        ("g4dn.xlarge", "us-east-1b", "Linux/UNIX")]
    assert float(rows[0]["SpotPrice"]) == prices.price("g4dn.xlarge", "us-east-1b")


def test_a_zone_that_does_not_offer_a_type_has_no_row() -> None:
    rows = prices.history(ZONES, NOW, instance_types=["p3.2xlarge"])
    assert "us-east-1e" not in {r["AvailabilityZone"] for r in rows}


def test_timestamp_is_recent_and_any_start_time_sees_the_price() -> None:
    rows = prices.history(ZONES, NOW, instance_types=["c5.large"], start_time=NOW - timedelta(minutes=5))
    assert rows
    stamp = datetime.strptime(rows[0]["Timestamp"], "%Y-%m-%dT%H:%M:%S.000Z").replace(tzinfo=timezone.utc)
    assert timedelta(0) < NOW - stamp <= timedelta(hours=2)


def test_a_window_ending_before_the_price_took_effect_is_empty() -> None:
    assert prices.history(ZONES, NOW, end_time=NOW - timedelta(days=1)) == []


def test_unknown_types_and_products_give_nothing() -> None:
    assert prices.history(ZONES, NOW, instance_types=["x9.huge"]) == []
    assert prices.history(ZONES, NOW, product_descriptions=["Windows"]) == []


def test_filters_as_ec2_names_them() -> None:
    rows = prices.history(ZONES, NOW)
    kept = prices.apply_filters(rows, {"availability-zone": ["us-east-1a"], "instance-type": ["t3.medium"]})
    assert {(r["AvailabilityZone"], r["InstanceType"]) for r in kept} == {("us-east-1a", "t3.medium")}
    assert len(kept) == 2  # both product descriptions
