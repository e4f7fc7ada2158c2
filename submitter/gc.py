"""Garbage collection: find what submitter created and nothing needs any more, and remove it.

Only resources carrying the `submitter:submission` tag are ever looked at; anything untagged is invisible
here. Each backend judges its own resources (backends/pool/sweep.py lists the rules) against the runs' states
read from S3 once. `submit --wait` and `cancel` remove a submission's resources themselves; `gc` covers
everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from submitter import backends, contract, tracking
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends import Orphan
from submitter.backends.base import ORDER

__all__ = ["Orphan", "find", "remove"]

HEARTBEAT_FRESH = timedelta(seconds=contract.HEARTBEAT_STALE_S)


class _Runs:
    """Run states per submission, read from S3 once (a backends.Ledger), for the bucket and prefix in use.

    Only resources tagged with this bucket and prefix are judged (another team's submissions in the same account
    have their documents elsewhere), and a submission whose documents are missing here is unknown, never an
    orphan: what cannot be read cannot be judged finished."""

    def __init__(self, s3: S3, where: tracking.Where) -> None:
        self.s3, self.where = s3, where
        self._cache: dict[str, list[contract.Status]] = {}

    def of(self, sub: str) -> list[contract.Status]:
        if sub not in self._cache:
            runs = [r for r in tracking.runs_of(self.s3, self.where, sub) if contract.is_run_of(r, sub)]
            self._cache[sub] = tracking.read_statuses(self.s3, self.where.layout, runs)
        return self._cache[sub]

    def ours(self, tags: dict[str, str]) -> bool:
        return (tags.get(contract.TAG_BUCKET) == self.where.bucket
                and tags.get(contract.TAG_PREFIX, "").strip("/") == self.where.prefix.strip("/"))

    def known(self, submission: str) -> bool:
        """The submission's runs are listed here and each has a status document."""
        runs = self.of(submission)
        return bool(runs) and all(r.state != contract.UNKNOWN for r in runs)

    def finished(self, submission: str) -> bool:
        runs = self.of(submission)
        return self.known(submission) and all(r.terminal for r in runs)

    def busy_on(self, submission: str, instance_id: str, now: datetime) -> bool:
        if not self.known(submission):
            return True  # unknown: it may be, so it is treated as busy
        for r in self.of(submission):
            beat = contract.parse_iso(r.heartbeat_at)
            if (r.instance_id == instance_id and r.state in contract.ACTIVE
                    and beat is not None and now - beat < HEARTBEAT_FRESH):
                return True
        return False


def find(aws: Aws, s3: S3, where: tracking.Where, now: datetime | None = None,
         cache_max_age_days: int = 30) -> list[Orphan]:
    """Every orphan, in removal order: each backend's, and the stale warm image cache snapshots (cache/)."""
    from submitter import cache

    now = now or datetime.now(timezone.utc)
    runs = _Runs(s3, where)
    found = [o for backend in backends.all_backends() for o in backend.orphans(aws, runs, now)]
    found += cache.orphans(aws, runs, now, cache_max_age_days)
    return sorted(found, key=lambda o: ORDER.index(o.kind))


def remove(aws: Aws, orphans: list[Orphan], say: Callable[[str], None]) -> list[Orphan]:
    """Remove the orphans, each by the backend that found it; returns those removed (a failure is reported)."""
    removed: list[Orphan] = []
    for backend in backends.all_backends():
        mine = [o for o in orphans if o.kind in backend.kinds]
        if mine:
            removed += backend.remove(aws, mine, say)
    from submitter import cache

    snapshots = [o for o in orphans if o.kind == cache.KIND]
    return removed + (cache.remove(aws, snapshots, say) if snapshots else [])
