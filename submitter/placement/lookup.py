"""The one impure part of placement: read what the market says (never creates anything).

`market(aws, ...)` is used by `submit` (with an AWS session) and by the dry run and `prices` through
`market_for(settings, ...)`, which first checks that credentials (or a running sandbox) are at hand.

Besides prices and zones, per pool: the Spot Placement Score (ec2:GetSpotPlacementScores), the Spot Instance
Advisor band (placement/advisor.py), our observed interruption rate and the job's history (placement/history.py).
They are read at once, in threads; a figure that cannot be read is left out and a note says why (never an
error: the plan goes on with what is known).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from submitter.placement.facts import Band, JobHistory, Market, Observed, Pool, PoolFacts

if TYPE_CHECKING:
    from pathlib import Path

    from submitter.aws.s3 import S3
    from submitter.aws.session import Aws
    from submitter.settings import Settings

T = TypeVar("T")
SUBMISSION_SUFFIX = "-20260101-000000-abcdef"  # a submission id is JOB plus this much (spec/sweep.py)


def market(aws: Aws, instance_types: list[str], *, sandbox: bool, job: str | None = None,
           target_capacity: int = 1, settings: Settings | None = None) -> Market:
    """Spot prices, the AZs with a subnet, and per pool the other figures, for `instance_types`.

    `job` names the job whose earlier runs inform the estimate; `target_capacity` is the number of workers the
    placement scores are asked for; `settings` say where the advisor data, the reports and the caches are
    (without them only prices, zones and scores are read). A figure that cannot be read is left out and a note
    says why."""
    from submitter.aws.ec2 import client as ec2_client
    from submitter.aws.ec2 import spot_prices, subnet_zones
    from submitter.aws.s3 import S3

    # Clients are made here, before the threads: a boto3 session makes them safely only one at a time.
    ec2 = ec2_client(aws)
    bucket = (settings.bucket if settings else None) or aws.bucket
    s3 = S3.connect(aws, bucket) if settings is not None and bucket else None
    with ThreadPoolExecutor(4) as pool:
        scores = pool.submit(_scores, ec2, instance_types, target_capacity, aws.region, sandbox)
        bands = pool.submit(_bands, settings, aws.region, instance_types)
        history = pool.submit(_history, aws, s3, settings, job)
        prices = spot_prices(ec2, instance_types)
        zones = subnet_zones(ec2)
        (score_of, score_note), (band_of, band_note) = scores.result(), bands.result()
        observed, job_history, history_notes = history.result()
    pools: set[Pool] = {(p.instance_type, p.availability_zone) for p in prices} | set(score_of) | set(observed)
    facts = {p: PoolFacts(score_of.get(p), band_of.get(p[0]), observed.get(p)) for p in sorted(pools)}
    source = "sandbox price table (not live)" if sandbox else "live spot price history"
    now = datetime.now(timezone.utc)
    return Market(prices, f"{source}, read {now:%Y-%m-%d %H:%M} UTC", zones, facts, job_history,
                  [f"spot prices: {source}, read {now:%Y-%m-%d %H:%M} UTC", score_note, band_note, *history_notes])


def _quietly(read: Callable[[], T], fallback: T, what: str) -> tuple[T, str | None]:
    """`read()`, or `fallback` and why not (any failure: a figure is never worth failing the plan for)."""
    from submitter.errors import SubmitterError

    try:
        return read(), None
    except SubmitterError as err:
        return fallback, f"{what} unknown ({err.where}: {err.what})"
    except Exception as err:  # noqa: BLE001 - e.g. a network error the adapters do not translate
        return fallback, f"{what} unknown ({type(err).__name__}: {err})"


def _scores(ec2: Any, types: list[str], capacity: int, region: str, sandbox: bool) -> tuple[dict[Pool, int], str]:
    from submitter.aws.ec2 import placement_scores

    none: dict[Pool, int] = {}
    found, problem = _quietly(lambda: placement_scores(ec2, types, capacity, region), none, "placement scores")
    if problem:
        return found, problem
    source = "the sandbox's emulation (from its price table)" if sandbox else "ec2:GetSpotPlacementScores"
    return found, (f"placement scores: single-AZ, for {capacity} instance(s) of {', '.join(types)}, from {source}, "
                   f"read now ({len({z for _, z in found})} AZ(s) scored; EC2 names at most ten)")


def advisor_url(settings: Settings) -> str:
    """SUBMITTER_SPOT_ADVISOR_URL; else in sandbox mode the sandbox's copy (its control port); else AWS's."""
    from submitter.placement import advisor

    if settings.spot_advisor_url:
        return settings.spot_advisor_url
    if settings.sandbox:
        return f"http://127.0.0.1:{settings.sandbox_port + 2}/spot-advisor-data.json"
    return advisor.URL


def _bands(settings: Settings | None, region: str, types: list[str]) -> tuple[dict[str, Band], str]:
    from submitter.placement import advisor

    if settings is None:
        return {}, "interruption bands not read (no settings given)"
    found = advisor.bands(advisor_url(settings), settings.home / "cache", region, types)
    return found.by_type, found.note


def _cache_dir(aws: Aws, settings: Settings, bucket: str) -> Path:
    """One cache directory per API endpoint, bucket and prefix (a sandbox's reports never mix with AWS's)."""
    where = f"{aws.endpoint_url or 'aws'}|{bucket}|{settings.prefix}"
    return settings.home / "cache" / "placement" / hashlib.sha256(where.encode()).hexdigest()[:16]


def _history(aws: Aws, s3: S3 | None, settings: Settings | None, job: str | None) -> tuple[
        dict[Pool, Observed], JobHistory, list[str]]:
    from submitter import tracking
    from submitter.placement import history

    if settings is None or s3 is None:
        return {}, JobHistory(), ["observed interruption rates and job history unknown (no bucket set)"]
    bucket = s3.bucket
    where = tracking.Where(bucket, settings.prefix)
    nothing: list[str] = []
    every, problem = _quietly(lambda: tracking.submissions(s3, where), nothing, "observed interruption rates")
    if problem:
        return {}, JobHistory(), [problem, "job history unknown (the submissions could not be listed)"]
    unknown: tuple[dict[Pool, Observed], str] = ({}, "")
    (observed, note), problem = _quietly(
        lambda: history.observed(s3, where.layout, every, _cache_dir(aws, settings, bucket)), unknown,
        "observed interruption rates")
    notes = [problem or note]
    if job:
        mine = [s for s in every if s[:-len(SUBMISSION_SUFFIX)] == job]
        (past, note), problem = _quietly(
            lambda: history.job_history(s3, where.layout, mine, lambda sub: tracking.runs_of(s3, where, sub,
                                                                                               lambda _: None)),
            (JobHistory(), ""), "job history")
        notes.append(problem or note)
        return observed, past, notes
    return observed, JobHistory(), notes


def market_for(settings: Settings, instance_types: list[str], *, job: str | None = None,
               target_capacity: int = 1) -> Market:
    """`market` when credentials (or the sandbox) are at hand; else a Market without prices saying why."""
    from submitter import connect
    from submitter.errors import SubmitterError

    if not connect.has_credentials(settings):
        where = "the sandbox is not running" if settings.sandbox else "no AWS credentials"
        return Market(None, f"spot prices unknown ({where})",
                      notes=[f"spot prices, placement scores, bands and observed rates unknown ({where})"])
    try:
        return market(connect.aws(settings), instance_types, sandbox=settings.sandbox, job=job,
                      target_capacity=target_capacity, settings=connect.resolve(settings))
    except SubmitterError as err:
        return Market(None, f"spot prices unknown ({err.what})")
