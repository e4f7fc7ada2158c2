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


def test_prioritized_takes_the_first_type_that_has_a_pool_under_the_max_price() -> None:
    # m5.large costs more than c5.large in every AZ, but comes first: capacity-optimized-prioritized takes it.
    choice = cheapest_pool(["m5.large", "c5.large"], SUBNETS, 0.1, prioritized=True)
    assert choice is not None and choice[0] == "m5.large"
    assert choice[3] == min(p for _, z in SUBNETS if (p := prices.price("m5.large", z)) is not None)
    # g5.xlarge is over the max price everywhere: the next type is used.
    assert cheapest_pool(["g5.xlarge", "c5.large"], SUBNETS, 0.1, prioritized=True)[0] == "c5.large"  # type: ignore[index]


# The sandbox's AWS limits (submitter/sandbox/limits.py): how each is measured, as AWS measures it.


def test_an_sqs_message_is_measured_in_bytes_with_its_attributes() -> None:
    from submitter.sandbox.limits import sqs_size

    assert sqs_size("é", {}) == 2
    attributes = {"run": {"DataType": "String", "StringValue": "ab"}, "b": {"DataType": "Binary", "BinaryValue": b"x"}}
    assert sqs_size("x", attributes) == 1 + (3 + 6 + 2) + (1 + 6 + 1)


def test_names_are_refused_in_the_words_of_the_request_model() -> None:
    from submitter.sandbox.limits import IAM_NAME_PATTERN, name_rule

    assert name_rule("r" * 64, "roleName", 64, IAM_NAME_PATTERN) is None
    too_long = name_rule("r" * 65, "roleName", 64, IAM_NAME_PATTERN)
    assert too_long is not None and "at 'roleName'" in too_long and "less than or equal to 64" in too_long
    bad = name_rule("a b", "roleName", 64, IAM_NAME_PATTERN)
    assert bad is not None and "regular expression pattern" in bad
    assert name_rule("", "roleName", 64, IAM_NAME_PATTERN) is not None


def test_the_first_tag_that_breaks_a_rule_is_named() -> None:
    from submitter.sandbox.limits import tag_problem

    assert tag_problem([("k" * 128, "v" * 256), ("submitter:run", "")]) is None
    assert tag_problem([("ok", "v"), ("AWS:x", "v")]) == ("reserved", "AWS:x")
    assert tag_problem([("k" * 129, "v")]) == ("key", "k" * 129)
    assert tag_problem([("", "v")]) == ("key", "")
    assert tag_problem([("k", "v" * 257)]) == ("value", "k")
