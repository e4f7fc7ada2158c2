"""The expected-cost model, pure: what one run most likely costs and how long it takes on one spot pool, counting
the restarts spot interruptions cause, as a range (low, high) with every input's value and what it rests on.

The formula and the reasons for each constant are in docs/decisions.md ("Expected cost of a job"). In short, for
a run of W hours of work cut into checkpoint segments (the whole run is one segment without checkpoints),
interruptions arriving at a constant rate r per instance-hour, and a restart overhead of D hours:

    a segment of x hours takes  g(x) = x                         when r = 0
                                g(x) = (1/r + D) * (e^(r x) - 1)  otherwise, with e^(r x) - 1 interruptions
    run hours  = first start + sum of g over the segments + final upload, drain and exit
    run cost   = run hours * (spot price + EBS), cut at limits.max_cost

The overhead constants are the on-paper model of bench/overhead.py (which imports them from here: ONE model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from submitter.placement.facts import Band, Observed, PoolFacts

# ---- the on-paper overhead (seconds, MB, MB/s); bench/overhead.py measures some of these and uses the rest
BOOT_S = 60  # launch -> user-data runs: typical published Linux (Amazon Linux 2023) boot 30-60 s; upper end
MIN_BILLED_S = 60  # EC2 pricing: Linux instances billed per second with a 60-second minimum
ECR_MB_S = 80  # in-region ECR pull: c5.large's baseline network is 0.75 Gbps (about 94 MB/s); 80 effective
S3_MB_S = 80  # in-region S3 upload and download, the same network bound
OUTPUTS_MB = 1000  # a training run's final outputs and last checkpoint: assume 1 GB
# runtime/pool.py: the worker that ran the last run lists the run index (two AWS CLI calls) and leaves; a drain of
# EMPTY_RECEIVES_TO_EXIT (2) x RECEIVE_WAIT (20 s) is left only while another worker's run may still come back.
DRAIN_S = 2
SHUTDOWN_S = 5  # the agent's exit and TerminateInstanceInAutoScalingGroup; billing ends at shutting-down
# The boot's `dnf install -y awscli-2` (docs/decisions.md, "Instance AMI"): no published figure; the upper end of
# a reasoned 15-30 s.
INSTALL_S = 30
# The same packages from a warm cache's volume (runtime/boot.sh, every repository disabled): no metadata, no
# download, the rpm transaction alone (the AWS CLI and its python3 dependencies unpacked onto the root volume).
# No published figure either; bench/overhead.py times `rpm -i` of the AWS CLI here when rpm is installed (about
# 13 s with its allowances), else assumes this.
CACHED_INSTALL_S = 13
AGENT_START_S = 15.0  # agent start after boot and pull; bench/resubmit.py measured 10-11 s in the sandbox
EXTRACT_MB_S = 100  # gunzip + extraction after the transfer; bench/overhead.py measured 118 MB/s on this machine
IMAGE_MB = {"gpu": 3500, "cpu": 500}  # compressed image: a PyTorch CUDA runtime image (3-4 GB); a slim CPU one
CHECKPOINT_MB = 1000  # what a restart restores: assume 1 GB, the same as the final upload

# ---- interruption rates
MONTH_H = 730.0  # AWS's trailing month, in hours
DAY_H = 24.0  # the shortest life assumed for the instances the Spot Advisor counts (see `band_rate`)
OPEN_BAND_SHARE = 0.5  # ">20%" has no upper bound; assume at most half the instances reclaimed in a month
UNKNOWN_BAND = Band(-1, "unknown (assumed up to 20%)", 0.0, 0.20)
MIN_OBSERVED_HOURS = 10.0  # our own record replaces the band once it rests on this many instance-hours
CHECKPOINT_ASSUMED_S = 1800.0  # a checkpoint every 30 minutes when no earlier run showed its interval
MAX_EXPONENT = 50.0  # e^50 interruptions per segment: the run does not finish in any useful sense


@dataclass(frozen=True)
class Figure:
    """One input of the model: its value and what it rests on."""

    value: Any
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}


@dataclass(frozen=True)
class Rate:
    """Interruptions per instance-hour, a range."""

    low: float
    high: float
    source: str


@dataclass(frozen=True)
class JobInputs:
    """What the model needs of the job; the same for every pool."""

    runtime: Figure  # hours of work one run needs
    checkpoint: Figure  # hours between checkpoints, or None: an interruption loses the whole attempt
    overhead: Figure  # {"first_s", "restart_s", "final_s"}
    retries: int  # retries.on_interruption
    max_cost: float | None  # limits.max_cost per run


@dataclass(frozen=True)
class Expected:
    """One run on one pool: the expected hours and cost as a range, with the inputs they rest on."""

    hours_low: float
    hours_high: float
    cost_low: float
    cost_high: float
    interruptions_low: float
    interruptions_high: float
    inputs: dict[str, Figure] = field(default_factory=dict)
    capped: bool = False  # limits.max_cost stops the run before it finishes at the high end
    unusable: str | None = None  # why the run most likely never finishes on this pool

    @property
    def useful_hour_cost(self) -> tuple[float, float]:
        """$ per hour of useful work (the run's work over what it bills), low and high."""
        work = float(self.inputs["runtime_hours"].value) if "runtime_hours" in self.inputs else 1.0
        return self.cost_low / work, self.cost_high / work

    def to_json(self) -> dict[str, Any]:
        return {
            "hours_low": _r(self.hours_low), "hours_high": _r(self.hours_high),
            "cost_low": _r(self.cost_low), "cost_high": _r(self.cost_high),
            "interruptions_low": _r(self.interruptions_low), "interruptions_high": _r(self.interruptions_high),
            "capped_by_max_cost": self.capped, "unusable": self.unusable,
            "inputs": {name: f.to_json() for name, f in self.inputs.items()},
        }


def _r(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 4)


# ---------------------------------------------------------------------------------------------- inputs


def band_rate(band: Band) -> tuple[float, float]:
    """AWS's band (the share f of instances reclaimed over the trailing month) as interruptions per hour.

    An instance that lives H hours under a constant rate r is reclaimed with probability 1 - e^(-r H), so
    r = -ln(1 - f) / H. AWS does not say how long the counted instances lived: the low end takes the band's low
    share over the whole month (the longest life, the lowest rate), the high end its high share over one day."""
    high = min(band.high, OPEN_BAND_SHARE)
    return max(0.0, -math.log(1 - band.low) / MONTH_H), -math.log(1 - high) / DAY_H


def observed_rate(observed: Observed) -> tuple[float, float]:
    """Our own k interruptions in h instance-hours as a range: (k - sqrt k) / h to (k + sqrt k + 1) / h, about
    one standard deviation of a Poisson count either side, and at least one interruption's worth above."""
    k, h = observed.interruptions, observed.instance_hours
    return max(0.0, k - math.sqrt(k)) / h, (k + math.sqrt(k) + 1) / h


def rate_of(facts: PoolFacts | None) -> Rate:
    """The pool's interruption rate: our own record when it rests on enough hours, else the band, widened up to
    our observed rate when we saw interruptions in fewer hours (never narrowed by too short a record)."""
    facts = facts or PoolFacts()
    band = facts.band or UNKNOWN_BAND
    band_low, band_high = band_rate(band)
    band_source = (f"Spot Advisor band {band.label} a month, as -ln(1-f)/{MONTH_H:.0f} h to -ln(1-f)/{DAY_H:.0f} h"
                   if facts.band else f"no Spot Advisor band: assumed up to {UNKNOWN_BAND.high:.0%} a month")
    obs = facts.observed
    if obs is None or obs.instance_hours <= 0:
        return Rate(band_low, band_high, band_source)
    seen = f"{obs.interruptions} interruption(s) in {obs.instance_hours:.1f} instance-hours of ours"
    if obs.instance_hours >= MIN_OBSERVED_HOURS:
        low, high = observed_rate(obs)
        return Rate(low, high, f"observed: {seen}")
    if obs.interruptions > 0:
        point = obs.interruptions / obs.instance_hours
        return Rate(band_low, max(band_high, point),
                    f"{band_source}; high end raised to our observed rate ({seen}, under {MIN_OBSERVED_HOURS:.0f} h)")
    return Rate(band_low, band_high, f"{band_source}; ours ({seen}) rests on too few hours to use")


def job_inputs(*, max_runtime_s: float, runtimes_s: list[float], checkpoints: bool,
               checkpoint_interval_s: float | None, gpu: bool, retries: int, max_cost: float | None) -> JobInputs:
    """The job's side of the model, each figure with its source."""
    if runtimes_s:
        ordered = sorted(runtimes_s)
        mid = len(ordered) // 2
        median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        runtime = Figure(round(min(median, max_runtime_s) / 3600, 4),
                         f"median of {len(ordered)} earlier succeeded run(s) of this job")
    else:
        runtime = Figure(round(max_runtime_s / 3600, 4), "limits.max_runtime (the worst case: no earlier run)")
    if not checkpoints:
        checkpoint = Figure(None, "the spec has no checkpoints: an interruption loses the whole attempt")
    elif checkpoint_interval_s:
        checkpoint = Figure(round(checkpoint_interval_s / 3600, 4), "observed median interval of earlier runs")
    else:
        checkpoint = Figure(round(CHECKPOINT_ASSUMED_S / 3600, 4),
                            f"assumed: a checkpoint every {CHECKPOINT_ASSUMED_S / 60:.0f} min (none observed yet)")
    image_mb = IMAGE_MB["gpu" if gpu else "cpu"]
    pull_s = image_mb / ECR_MB_S + image_mb / EXTRACT_MB_S
    restore_s = CHECKPOINT_MB / S3_MB_S if checkpoints else 0.0
    first_s = BOOT_S + INSTALL_S + pull_s + AGENT_START_S
    overhead = Figure(
        {"first_s": round(first_s, 1), "restart_s": round(first_s + restore_s, 1),
         "final_s": round(OUTPUTS_MB / S3_MB_S + DRAIN_S + SHUTDOWN_S, 1)},
        f"on paper (bench/overhead.py): boot {BOOT_S} s + install {INSTALL_S} s + pull of an assumed "
        f"{image_mb} MB image {pull_s:.0f} s + agent start {AGENT_START_S:.0f} s"
        + (f"; a restart also restores {CHECKPOINT_MB} MB of checkpoints ({restore_s:.1f} s)" if checkpoints else "")
        + f"; the end uploads {OUTPUTS_MB} MB, drains {DRAIN_S} s and exits {SHUTDOWN_S} s")
    return JobInputs(runtime, checkpoint, overhead, retries, max_cost)


# ---------------------------------------------------------------------------------------------- the model


def segments(work_h: float, interval_h: float | None) -> list[float]:
    """The run's work cut at its checkpoints: full intervals, then the rest."""
    if not interval_h or interval_h >= work_h:
        return [work_h]
    full = int(work_h // interval_h)
    rest = work_h - full * interval_h
    return [interval_h] * full + ([rest] if rest > 1e-9 else [])


def segment(x_h: float, rate: float, restart_h: float) -> tuple[float, float]:
    """(expected hours, expected interruptions) to get through x hours of work that an interruption sends back
    to its start, each interruption adding a restart of `restart_h`. Interruptions before a segment completes
    are geometric with mean e^(r x) - 1; each loses on average 1/r - x/(e^(r x) - 1) hours of work."""
    if rate <= 0:
        return x_h, 0.0
    if rate * x_h > MAX_EXPONENT:
        return math.inf, math.inf
    failures = math.expm1(rate * x_h)
    return (1 / rate + restart_h) * failures, failures


def expected(price: float, ebs_per_hour: float, rate: Rate, job: JobInputs,
             price_source: str = "spot price of the pool ($/h)") -> Expected:
    """One run on one pool (price $/h, EBS $/h): the expected hours and cost at both ends of the rate."""
    work = float(job.runtime.value)
    parts = segments(work, job.checkpoint.value)
    o = job.overhead.value
    fixed_h = (o["first_s"] + o["final_s"]) / 3600
    restart_h = o["restart_s"] / 3600
    ends = []
    for r in (rate.low, rate.high):
        hours, interruptions = fixed_h, 0.0
        for x in parts:
            h, n = segment(x, r, restart_h)
            hours, interruptions = hours + h, interruptions + n
        ends.append((max(hours, MIN_BILLED_S / 3600), interruptions))
    (h_low, n_low), (h_high, n_high) = ends
    per_hour = price + ebs_per_hour
    cost_low, cost_high = h_low * per_hour, h_high * per_hour
    capped = job.max_cost is not None and cost_high > job.max_cost
    if job.max_cost is not None:
        cost_low, cost_high = min(cost_low, job.max_cost), min(cost_high, job.max_cost)
    unusable = None
    if exhausts_retries(n_low, job.retries):
        unusable = (f"expects {_count(n_low)} interruptions per run even at the low rate: more than "
                    f"retries.on_interruption ({job.retries}) is the likelier outcome, so the run would most likely "
                    f"fail")
    elif capped and job.max_cost is not None and h_low * per_hour > job.max_cost:
        unusable = f"even the low end ({h_low * per_hour:.2f} $) is over limits.max_cost ({job.max_cost} $)"
    inputs = {
        "spot_price": Figure(price, price_source),
        "ebs_per_hour": Figure(round(ebs_per_hour, 5), "gp3 volume of resources.volume_gb ($/h)"),
        "runtime_hours": job.runtime,
        "interruption_rate": Figure([round(rate.low, 6), round(rate.high, 6)], f"per instance-hour; {rate.source}"),
        "checkpoint_hours": job.checkpoint,
        "overhead": job.overhead,
        "retries_on_interruption": Figure(job.retries, "retries.on_interruption"),
        "max_cost": Figure(job.max_cost, "limits.max_cost per run (the cost is cut there)"),
    }
    return Expected(h_low, h_high, cost_low, cost_high, n_low, n_high, inputs, capped, unusable)


def _count(n: float) -> str:
    return "countless" if math.isinf(n) else f"{n:.1f}"


def exhausts_retries(mean: float, retries: int) -> bool:
    """More than `retries` interruptions is the likelier outcome when they come as a Poisson process with this
    mean per run: P(N > retries) > 1/2. (A mean just above `retries` is not enough: with retries 0 any pool has
    a mean above 0, yet a run with a 1 % chance of one interruption will most likely finish.)"""
    if math.isinf(mean) or math.isnan(mean):
        return True
    term = total = math.exp(-mean)
    for k in range(1, retries + 1):
        term *= mean / k
        total += term
    return 1.0 - total > 0.5


def at_risk_of_retries(e: Expected, retries: int) -> str | None:
    """Why the pool may exhaust the run's interruption retries at the high end, or None."""
    if exhausts_retries(e.interruptions_high, retries):
        return (f"expects up to {_count(e.interruptions_high)} interruptions per run: at that rate more than "
                f"retries.on_interruption ({retries}) is the likelier outcome")
    return None


def for_job(per_pool: list[Expected], runs: int, workers: int) -> dict[str, Any]:
    """The job's expected cost and time from its pools' per-run figures: the range spans the pools (the group
    may launch any of them); runs go in waves of `workers`, so the job takes ceil(runs / workers) runs' time."""
    best = min(per_pool, key=lambda e: (e.cost_high, e.cost_low))
    low = min(per_pool, key=lambda e: e.cost_low)
    high = max(per_pool, key=lambda e: e.cost_high)
    waves = math.ceil(runs / max(1, workers))
    per_run = {
        "cost_low": _r(low.cost_low), "cost_high": _r(high.cost_high),
        "hours_low": _r(min(e.hours_low for e in per_pool)), "hours_high": _r(max(e.hours_high for e in per_pool)),
        "interruptions_low": _r(min(e.interruptions_low for e in per_pool)),
        "interruptions_high": _r(max(e.interruptions_high for e in per_pool)),
        "capped_by_max_cost": any(e.capped for e in per_pool),
    }
    return {
        "cost_low": _r(low.cost_low * runs), "cost_high": _r(high.cost_high * runs),
        "hours_low": _r(min(e.hours_low for e in per_pool) * waves),
        "hours_high": _r(max(e.hours_high for e in per_pool) * waves),
        "runs": runs, "waves": waves,
        "per_run": per_run,
        "inputs": {name: f.to_json() for name, f in best.inputs.items()},
        "formula": "docs/decisions.md, Expected cost of a job: per segment of x h, (1/r + D)(e^(r x) - 1) h",
    }


REFERENCE_WORK_H = 4.0  # `submitter prices` has no job: it prices a 4-hour run with checkpoints every 30 min


def reference_job(gpu: bool) -> JobInputs:
    """The job `prices` assumes for its expected $/useful-hour: REFERENCE_WORK_H hours of work, checkpoints every
    CHECKPOINT_ASSUMED_S, the default 3 interruption retries, no max_cost."""
    job = job_inputs(max_runtime_s=REFERENCE_WORK_H * 3600, runtimes_s=[], checkpoints=True,
                     checkpoint_interval_s=None, gpu=gpu, retries=3, max_cost=None)
    return JobInputs(Figure(REFERENCE_WORK_H, f"a reference run of {REFERENCE_WORK_H:.0f} h of work"),
                     job.checkpoint, job.overhead, job.retries, None)
