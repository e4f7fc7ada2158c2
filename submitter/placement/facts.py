"""What is known about the spot market for one job, per pool (instance type x AZ), and where each figure came
from. Plain data: gathered by placement/lookup.py (the only impure part), consumed by plan.py and the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from submitter.aws.ec2 import SpotPrice

Pool = tuple[str, str]  # (instance type, availability zone)


@dataclass(frozen=True)
class Band:
    """A Spot Instance Advisor interruption-frequency band: the share of instances AWS reclaimed in the last
    month, e.g. index 0 "<5%" (0.0-0.05) ... index 4 ">20%" (0.20-1.0)."""

    index: int
    label: str
    low: float  # monthly interruption fraction, lower bound
    high: float  # upper bound


@dataclass(frozen=True)
class Observed:
    """Our own record for a pool, from the instance reports workers leave in S3."""

    interruptions: int
    instance_hours: float

    @property
    def rate(self) -> float | None:
        """Interruptions per instance-hour; None when no hour is on record."""
        return self.interruptions / self.instance_hours if self.instance_hours > 0 else None


@dataclass(frozen=True)
class PoolFacts:
    """The four figures of one pool; None where a figure is unknown (the notes in Market say why)."""

    score: int | None = None  # Spot Placement Score, 1-10, single-AZ, for the job's target capacity
    band: Band | None = None  # AWS's published interruption band for the type in the region
    observed: Observed | None = None  # our interruptions per instance-hour


@dataclass(frozen=True)
class JobHistory:
    """What earlier runs of this job tell the estimate."""

    runtimes_s: list[float] = field(default_factory=list)  # succeeded runs' runtimes (seconds)
    checkpoint_interval_s: float | None = None  # observed median interval between checkpoint syncs


@dataclass(frozen=True)
class Market:
    """Spot prices when they could be read (else None and `note` says why), plus the other figures per pool."""

    prices: list[SpotPrice] | None
    note: str = ""
    zones: frozenset[str] | None = None  # AZs with a subnet in the account, when known
    facts: dict[Pool, PoolFacts] = field(default_factory=dict)
    history: JobHistory = field(default_factory=JobHistory)
    notes: list[str] = field(default_factory=list)  # per figure: its source and age, or why it is unknown
