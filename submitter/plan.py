"""The plan: a pure function of a loaded spec, the settings and spot prices; backend-neutral.

It names the submission and its runs (deterministically, from the submission id, so a retried submit creates
nothing twice), resolves the image, ranks the spot placements and estimates the cost. What only one backend
needs (a worker pool's launch template and queue, a Batch job definition) each backend builds from this plan
(submitter/backends/); `--dry-run` prints both. `lookup_prices` is the one impure helper: it only reads prices.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from submitter import contract, pricing
from submitter.context import PLATFORM, content_tag, refuse_secret_files
from submitter.errors import CapacityError, UsageError
from submitter.placement import model, rank
from submitter.placement.facts import Band, Market, Observed
from submitter.settings import Settings
from submitter.spec import JobSpec, LoadedSpec, Run, expand, submission_id

GPU_FAMILIES = ("p", "g", "dl", "trn", "inf")
PriceLookup = Market  # the name callers used before Market carried more than prices


@dataclass(frozen=True)
class Placement:
    instance_type: str
    availability_zone: str
    spot_price: float
    on_demand: float | None
    score: int | None = None  # Spot Placement Score (1-10), single-AZ, for the job's target capacity
    band: Band | None = None  # AWS's interruption band for the type in the region
    observed: Observed | None = None  # our own interruptions per instance-hour in this pool
    expected: model.Expected | None = None  # one run here: expected hours and cost (placement/model.py)

    @property
    def savings(self) -> float | None:
        return None if not self.on_demand else round(1 - self.spot_price / self.on_demand, 3)


@dataclass(frozen=True)
class Plan:
    submission_id: str
    job: str
    spec_file: str
    region: str
    bucket: str | None
    prefix: str
    backend: str  # the name of the backend that runs it (resources.backend or --backend; backends/ resolves it)
    runs: list[Run]
    command: list[str]
    image: dict[str, Any]
    placements: list[Placement]
    excluded: list[Placement]
    price_note: str
    tags: dict[str, str]
    estimate: dict[str, Any]
    account: str  # for ARNs; a policy variable when the account is not known (a dry run)
    ecr_repository: str
    ssh_key: str | None
    loaded: LoadedSpec = field(repr=False, compare=False)
    warnings: list[str] = field(default_factory=list)
    dropped: list[tuple[Placement, str]] = field(default_factory=list)  # under max_price, not used: why
    strategy: dict[str, Any] = field(default_factory=dict)  # the group's allocation, types, zones (rank.py)
    market_notes: list[str] = field(default_factory=list)  # where each figure came from, or why it is unknown
    budget: float | None = None  # SUBMITTER_BUDGET (USD a month): the workers stop taking runs at it
    warm_cache: dict[str, Any] | None = None  # the image's `submitter cache` snapshot, found at submit (cache/plan.py)

    @property
    def spec(self) -> JobSpec:
        return self.loaded.spec

    @property
    def layout(self) -> contract.Layout:
        return contract.Layout(self.prefix)

    @property
    def role(self) -> str:
        """The submission's own IAM role: the workers' instance role, or the Batch jobs' job role."""
        return role_name(self.submission_id)

    @property
    def bucket_or_placeholder(self) -> str:
        return self.bucket or "UNSET-BUCKET"

    def to_json(self) -> dict[str, Any]:
        """The backend-neutral part; backends.dry_run adds the backend's own."""
        return {
            "submission_id": self.submission_id,
            "job": self.job,
            "spec_file": self.spec_file,
            "region": self.region,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "backend": self.backend,
            "runs": [
                {"run_id": r.run_id, "index": r.index, "sweep": r.sweep, "env": r.env, "command": self.command,
                 "s3": self.run_uri(r.run_id)}
                for r in self.runs
            ],
            "image": self.image,
            "placement": {
                "candidates": [_placement_json(p) for p in self.placements],
                "dropped": [{**_placement_json(p), "reason": why} for p, why in self.dropped],
                "excluded_over_max_price": [_placement_json(p) for p in self.excluded],
                "strategy": self.strategy,
                "note": self.price_note,
                "notes": self.market_notes,
            },
            "tags": self.tags,
            "estimate": self.estimate,
            "warnings": self.warnings,
        }

    def run_uri(self, run_id: str) -> str:
        return contract.Layout.uri(self.bucket or "<bucket>", self.layout.run(run_id))


def make_plan(
    loaded: LoadedSpec,
    settings: Settings,
    lookup: PriceLookup,
    *,
    now: datetime | None = None,
    token: str | None = None,
    account: str | None = None,
    submission: str | None = None,
    backend: str | None = None,
) -> Plan:
    """Everything a submission will do, computed without touching AWS or docker.

    `submission` re-uses an id (a retried submit), so every name and message is the same as before; `backend`
    overrides the spec's resources.backend."""
    spec = loaded.spec
    now = now or datetime.now(timezone.utc)
    if submission is None:
        submission = submission_id(spec.name, now, token or secrets.token_hex(3))
    else:
        check_submission(spec.name, submission)
    runs = expand(spec, submission)
    region = spec.resources.region or settings.region
    warnings: list[str] = []
    if not settings.bucket:
        warnings.append("no bucket is set: run `submitter init` or set SUBMITTER_BUCKET before submitting")
    inputs = _job_inputs(spec, lookup)
    choice, excluded, notes = _placements(loaded, region, lookup, inputs)
    deadline = now + timedelta(seconds=spec.limits.max_runtime + contract.DEADMAN_MARGIN_S)
    tags = {
        contract.TAG_SUBMISSION: submission,
        contract.TAG_JOB: spec.name,
        contract.TAG_DEADLINE: contract.iso(deadline),
        contract.TAG_BUCKET: settings.bucket or "",
        contract.TAG_PREFIX: settings.prefix,
    }
    return Plan(
        submission_id=submission,
        job=spec.name,
        spec_file=str(loaded.path),
        region=region,
        bucket=settings.bucket,
        prefix=settings.prefix,
        backend=backend or spec.resources.backend,
        runs=runs,
        command=spec.command,
        image=_image(loaded, settings, region, account),
        placements=choice.kept,
        excluded=excluded,
        price_note=lookup.note,
        tags=tags,
        estimate={**_estimate(loaded, region, len(runs), choice.kept),
                  "expected": _expected(spec, region, len(runs), choice.kept, inputs)},
        account=account or "${aws:PrincipalAccount}",
        ecr_repository=settings.ecr_repository,
        ssh_key=settings.ssh_key,
        budget=settings.budget,
        loaded=loaded,
        warnings=warnings,
        dropped=choice.dropped,
        strategy=choice.strategy,
        market_notes=notes,
    )


def check_submission(job: str, submission: str) -> None:
    """`submission` (submit --id) is an id an earlier submit of job `job` made; a UsageError otherwise."""
    if not re.fullmatch(re.escape(job) + r"-\d{8}-\d{6}-[0-9a-f]{6}", submission):
        raise UsageError("--id", f"{submission!r} is not a submission id of job {job!r}",
                         f"use an id like {job}-20261126-070000-abc123 from an earlier submit")


# ---------------------------------------------------------------------------------------------- parts


def _image(loaded: LoadedSpec, settings: Settings, region: str, account: str | None) -> dict[str, Any]:
    spec = loaded.spec
    if spec.image.uri:
        return {"prebuilt": True, "uri": spec.image.uri}
    assert loaded.dockerfile is not None and loaded.context is not None
    refuse_secret_files(loaded.context, loaded.dockerfile)  # before anything is built: a dry run shows it too
    tag = content_tag(loaded.dockerfile, loaded.context, spec.image.build_args)
    registry = settings.registry or f"{account or '<account>'}.dkr.ecr.{region}.amazonaws.com"
    return {
        "prebuilt": False,
        "tag": tag,
        "repository": settings.ecr_repository,
        "uri": f"{registry}/{settings.ecr_repository}:{tag}",
        "dockerfile": str(loaded.dockerfile),
        "context": str(loaded.context),
        "build_args": spec.image.build_args,
        "platform": PLATFORM,
    }


def _placements(loaded: LoadedSpec, region: str, lookup: PriceLookup, inputs: model.JobInputs
                ) -> tuple[rank.Choice, list[Placement], list[str]]:
    """The pools the group uses (rank.choose), the ones over max_price, and the market's notes."""
    spec = loaded.spec
    if lookup.prices is None:
        offline = ["offline: no spot prices, placement scores, interruption bands or records of ours were read; "
                   "the group uses every type in every AZ with a subnet (price-capacity-optimized)"]
        strategy = {"allocation": rank.PRICE_CAPACITY, "why": "nothing known of the market",
                    "types": list(spec.resources.instance_types), "zones": None, "margin": rank.MARGIN,
                    "high_band_index": rank.HIGH_BAND, "low_score": rank.LOW_SCORE, "reachable_not_kept": []}
        return rank.Choice([], [], strategy), [], offline + list(lookup.notes)
    ebs = pricing.ebs_per_hour(region, spec.resources.volume_gb)
    offers = []
    for p in lookup.prices:
        if p.instance_type not in spec.resources.instance_types or (
                lookup.zones is not None and p.availability_zone not in lookup.zones):
            continue
        facts = lookup.facts.get((p.instance_type, p.availability_zone))
        offers.append(Placement(
            p.instance_type, p.availability_zone, p.price, pricing.on_demand(region, p.instance_type),
            score=facts.score if facts else None, band=facts.band if facts else None,
            observed=facts.observed if facts else None,
            expected=model.expected(p.price, ebs, model.rate_of(facts), inputs)))
    offers.sort(key=lambda p: (p.spot_price, p.instance_type, p.availability_zone))
    cap = spec.resources.max_price
    eligible = [p for p in offers if cap is None or p.spot_price <= cap]
    excluded = [p for p in offers if p not in eligible]
    if not eligible:
        cheapest = f"; the cheapest offer is {offers[0].instance_type} in {offers[0].availability_zone} at " \
                   f"${offers[0].spot_price:.4f}/h" if offers else ""
        raise CapacityError(
            f"{loaded.path}: resources",
            f"no spot offer for {', '.join(spec.resources.instance_types)} in {region} at or under "
            f"max_price ${cap}/h{cheapest}",
            "raise resources.max_price, add instance types, or pick another region (see `submitter prices TYPE`)",
        )
    choice = rank.choose(eligible, spec.retries.on_interruption)
    return choice, excluded, list(lookup.notes) + choice.notes


def _job_inputs(spec: JobSpec, lookup: PriceLookup) -> model.JobInputs:
    history = lookup.history
    return model.job_inputs(
        max_runtime_s=spec.limits.max_runtime, runtimes_s=history.runtimes_s, checkpoints=bool(spec.checkpoints),
        checkpoint_interval_s=history.checkpoint_interval_s, gpu=uses_gpu(spec),
        retries=spec.retries.on_interruption, max_cost=spec.limits.max_cost)


def _expected(spec: JobSpec, region: str, runs: int, kept: list[Placement], inputs: model.JobInputs
              ) -> dict[str, Any]:
    """The expected cost and time of the job next to the worst case: over the kept pools, or at max_price (the
    assumed band) when no spot price is known."""
    per_pool = [p.expected for p in kept if p.expected is not None]
    basis = "the kept pools (the group may launch any of them)"
    if not per_pool:
        ebs = pricing.ebs_per_hour(region, spec.resources.volume_gb)
        price = spec.resources.max_price
        per_pool = [model.expected(price or 0.0, ebs, model.rate_of(None), inputs,
                                   "resources.max_price: spot prices unknown" if price else "unknown")]
        basis = (f"max_price ${price}/h and an assumed interruption band (spot prices unknown)" if price else
                 "spot prices unknown and no max_price: hours only, no cost")
    result = model.for_job(per_pool, runs, spec.queue.max_workers)
    if not kept and not spec.resources.max_price:
        result.update({"cost_low": None, "cost_high": None})
        result["per_run"].update({"cost_low": None, "cost_high": None})
    result["basis"] = basis
    return result


def is_gpu(instance_type: str) -> bool:
    return instance_type.split(".")[0].startswith(GPU_FAMILIES)


def uses_gpu(spec: JobSpec) -> bool:
    """The job wants GPUs: one of its types has them and it did not ask for none."""
    return spec.resources.gpus != 0 and any(is_gpu(t) for t in spec.resources.instance_types)


def _estimate(loaded: LoadedSpec, region: str, runs: int, placements: list[Placement]) -> dict[str, Any]:
    spec = loaded.spec
    hours = spec.limits.max_runtime / 3600
    ebs = pricing.ebs_per_hour(region, spec.resources.volume_gb)
    result: dict[str, Any] = {
        "currency": "USD",
        "runs": runs,
        "max_runtime_hours": round(hours, 3),
        "basis": "runs x max_runtime x (spot price + EBS); each run stops at limits.max_cost",
        "max_cost_per_run": spec.limits.max_cost,
    }
    if not placements:
        result.update({"spot_price_per_hour": "unknown", "per_run_at_most": "unknown", "total_at_most": "unknown"})
        if spec.resources.max_price is not None:
            per_run = hours * (spec.resources.max_price + ebs)
            result["total_at_most_at_max_price"] = round(_capped(per_run, spec.limits.max_cost) * runs, 4)
        return result
    best = placements[0]
    per_run = _capped(hours * (best.spot_price + ebs), spec.limits.max_cost)
    result.update({
        "spot_price_per_hour": best.spot_price,
        "instance_type": best.instance_type,
        "availability_zone": best.availability_zone,
        "ebs_per_hour": round(ebs, 5),
        "per_run_at_most": round(per_run, 4),
        "total_at_most": round(per_run * runs, 4),
    })
    if best.on_demand:
        result["on_demand_total"] = round(hours * (best.on_demand + ebs) * runs, 4)
    return result


def _capped(value: float, cap: float | None) -> float:
    return min(value, cap) if cap is not None else value


def _placement_json(p: Placement) -> dict[str, Any]:
    e = p.expected
    return {"instance_type": p.instance_type, "availability_zone": p.availability_zone,
            "spot_price": p.spot_price, "on_demand": p.on_demand, "savings": p.savings, "score": p.score,
            "band": {"index": p.band.index, "label": p.band.label} if p.band else None,
            "observed": {"interruptions": p.observed.interruptions, "instance_hours": p.observed.instance_hours,
                         "rate": p.observed.rate} if p.observed else None,
            "expected_cost": {"low": _finite(e.cost_low), "high": _finite(e.cost_high)} if e else None,
            "expected": e.to_json() if e else None}


def _finite(value: float) -> float | None:
    return None if value == float("inf") else round(value, 4)


def role_name(submission: str) -> str:
    return fit(f"submitter-{submission}", 64)


def fit(name: str, limit: int) -> str:
    """`name` if it fits AWS's length limit, else a prefix of it plus a short hash (still unique)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}-{digest}"


# ---------------------------------------------------------------------------------------------- prices


def lookup_prices(loaded: LoadedSpec, settings: Settings) -> Market:
    """Read the market for the spec's types when credentials are at hand; never creates anything."""
    from submitter.placement.lookup import market_for

    return market_for(settings, loaded.spec.resources.instance_types, job=loaded.spec.name,
                      target_capacity=target_capacity(loaded.spec))


def target_capacity(spec: JobSpec) -> int:
    """How many instances the job asks for at once: what the placement scores are asked about."""
    return max(1, min(spec.run_count, spec.queue.max_workers))
