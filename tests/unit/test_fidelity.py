"""The sandbox's spot pool choice: cheapest offered pool at or under the max price, as AWS would launch."""

from __future__ import annotations

from submitter.sandbox import prices
from submitter.sandbox.fidelity import cheapest_pool

SUBNETS = [("subnet-a", "us-east-1a"), ("subnet-b", "us-east-1b"), ("subnet-e", "us-east-1e")]


def test_cheapest_type_and_zone_win() -> None:
    choice = cheapest_pool(["m5.large", "c5.large"], SUBNETS, 0.1)
    assert choice is not None
    instance_type, subnet, zone, price = choice
    every = [prices.price(t, z) for t in ("m5.large", "c5.large") for _, z in SUBNETS]
    assert price == min(p for p in every if p is not None)
    assert prices.price(instance_type, zone) == price and dict(SUBNETS)[subnet] == zone


def test_nothing_under_the_max_price_launches_nothing() -> None:
    assert cheapest_pool(["g5.xlarge"], SUBNETS, 0.01) is None


def test_zones_that_do_not_offer_a_type_are_skipped() -> None:
    choice = cheapest_pool(["p3.2xlarge"], [("subnet-e", "us-east-1e")], None)
    assert choice is None  # us-east-1e has no p3.2xlarge in the table
