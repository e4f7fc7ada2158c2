"""The backend interface: what executes a plan (`pool`: spot workers of our own; `batch`: AWS Batch), and the
few shapes every backend speaks in. `execute`, `cancel` and `gc` use only this, never a backend's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from submitter import contract
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.plan import Plan
from submitter.progress import Progress

Say = Callable[[str], None]


@dataclass(frozen=True)
class Scope:
    """What a cancel is about: a submission, and its runs the cancel names (all of them, or one)."""

    submission: str
    run_ids: list[str]
    all_runs: list[str]
    whole: bool  # the whole submission (else one run)

    def describe(self) -> str:
        if self.whole:
            return f"submission {self.submission} ({len(self.run_ids)} run(s))"
        return f"run {self.run_ids[0]} of submission {self.submission}"


@dataclass(frozen=True)
class Orphan:
    """A tagged resource nothing needs any more (`submitter gc`)."""

    kind: str  # one of ORDER
    id: str  # what the delete call takes: instance/volume/SG id, group/template/queue/role name
    submission: str
    why: str
    url: str = ""  # queues: the URL

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}


ORDER = ("instance", "group", "launch-template", "queue", "role", "ssh-rule", "security-group", "volume", "secrets",
         "snapshot")


class Ledger(Protocol):
    """What gc knows of each submission's runs (read from S3 once), for a backend to judge its resources."""

    def ours(self, tags: dict[str, str]) -> bool:
        """Tagged with the bucket and prefix gc reads: anything else is another team's, and not judged."""
        ...

    def known(self, submission: str) -> bool:
        """Its runs and their status documents are readable here (else: unknown, never an orphan)."""
        ...

    def finished(self, submission: str) -> bool: ...

    def busy_on(self, submission: str, instance_id: str, now: datetime) -> bool: ...


class Backend(Protocol):
    """One way to run a plan. Every method is idempotent for one submission id."""

    @property
    def name(self) -> str: ...

    @property
    def kinds(self) -> tuple[str, ...]:
        """The Orphan kinds this backend's `orphans` finds and `remove` removes."""
        ...

    def describe(self, plan: Plan) -> dict[str, Any]:
        """Pure: this backend's part of the plan (what it will create), for `--dry-run`."""
        ...

    def summary(self, plan: Plan) -> list[str]:
        """Pure: that part in a few human lines, for `--dry-run` without --json."""
        ...

    def submit(self, aws: Aws, plan: Plan, image_uri: str, secrets: dict[str, str], progress: Progress) -> None:
        """Stage the runs (docs/runtime-contract.md) and start what runs them."""
        ...

    def stranded(self, aws: Aws, s3: S3, layout: contract.Layout, submission: str,
                 states: list[contract.Status]) -> list[contract.Status]:
        """Runs of `submission` that will never run (their workers are gone); marked failed, and returned."""
        ...

    def stop(self, aws: Aws, s3: S3, layout: contract.Layout, scope: Scope, say: Say) -> None:
        """Cancel, after the markers are written: start nothing new for the scope's runs, stop running ones."""
        ...

    def force_stop(self, aws: Aws, unconfirmed: list[contract.Status], say: Say) -> list[str]:
        """Runs that never confirmed a cancel: stop whatever still holds them, if it is the submission's own
        (submitter/ownership.py; a refusal is said); returns what was stopped."""
        ...

    def clean_up(self, aws: Aws, submission: str) -> list[str]:
        """Remove what the submission left once it has nothing left to run; returns what went."""
        ...

    def orphans(self, aws: Aws, ledger: Ledger, now: datetime) -> list[Orphan]:
        """Tagged resources of this backend that nothing needs any more."""
        ...

    def remove(self, aws: Aws, orphans: list[Orphan], say: Say) -> list[Orphan]:
        """Remove orphans of this backend's kinds; returns those removed (a failed one is reported)."""
        ...
