"""The one impure part of placement: read what the market says (never creates anything).

`market(aws, ...)` is used by `submit` (with an AWS session) and by the dry run and `prices` through
`market_for(settings, ...)`, which first checks that credentials (or a running sandbox) are at hand.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from submitter.placement.facts import Market

if TYPE_CHECKING:
    from submitter.aws.session import Aws
    from submitter.settings import Settings


def market(aws: Aws, instance_types: list[str], *, sandbox: bool, job: str | None = None,
           target_capacity: int = 1) -> Market:
    """Spot prices, the AZs with a subnet, and per pool the other figures, for `instance_types`.

    `job` names the job whose earlier runs inform the estimate; `target_capacity` is the number of workers the
    placement scores are asked for. A figure that cannot be read is left out and a note says why."""
    from submitter.aws.ec2 import client as ec2_client
    from submitter.aws.ec2 import spot_prices, subnet_zones

    del job, target_capacity  # used by the per-pool figures
    ec2 = ec2_client(aws)
    prices = spot_prices(ec2, instance_types)
    zones = subnet_zones(ec2)
    source = "sandbox price table (not live)" if sandbox else "live spot price history"
    return Market(prices, f"{source}, read {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", zones)


def market_for(settings: Settings, instance_types: list[str], *, job: str | None = None,
               target_capacity: int = 1) -> Market:
    """`market` when credentials (or the sandbox) are at hand; else a Market without prices saying why."""
    from submitter import connect
    from submitter.errors import SubmitterError

    if not connect.has_credentials(settings):
        where = "the sandbox is not running" if settings.sandbox else "no AWS credentials"
        return Market(None, f"spot prices unknown ({where})")
    try:
        return market(connect.aws(settings), instance_types, sandbox=settings.sandbox, job=job,
                      target_capacity=target_capacity)
    except SubmitterError as err:
        return Market(None, f"spot prices unknown ({err.what})")
