"""Cancel a run or a whole submission: markers the runtime honours, queued runs dropped, nothing new started,
running containers stopped gracefully (outputs uploaded), then nothing left alive or billing.

The runtime looks for the run's and the submission's cancel markers before it starts a run and every few
seconds while one runs; it drops a queued run whose status is already terminal. What stops the rest is the
submission's backend (backends/): a worker pool lowers its group, AWS Batch terminates the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from submitter import backends, contract, tracking
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends import Scope
from submitter.errors import UsageError
from submitter.runtime import index

__all__ = ["Scope", "cancel", "scope"]

WAIT_S = 600.0  # the runtime's grace (90 s) + final uploads, with room for a slow upload
POLL_S = 3.0


def scope(s3: S3, where: tracking.Where, target: str) -> Scope:
    """RUN or SUBMISSION id -> Scope; a job name is refused (cancelling 'the latest' by accident is costly).

    The submission is the one the id's own shape names (contract.submission_of), never the one a status
    document claims: a job can write its own status, and must not steer a cancel to another submission."""
    layout = where.layout
    sub = contract.submission_of(target)
    if sub is not None and s3.exists(layout.status(target)):
        return Scope(sub, [target], _runs(s3, where, sub) or [target], whole=False)
    if sub == target and (s3.exists(layout.queued(target)) or s3.exists(layout.submission_doc(target))):
        runs = _runs(s3, where, target)
        return Scope(target, runs, runs, whole=True)
    raise UsageError(target, f"no run or submission of that name in {where.uri}",
                     "cancel takes a RUN or SUBMISSION id; list them with `submitter status --all`")


def _runs(s3: S3, where: tracking.Where, submission: str) -> list[str]:
    """The runs the `queued` marker lists, those of `submission` only (a forged entry is not a run of it)."""
    return [r for r in tracking.runs_of(s3, where, submission) if contract.is_run_of(r, submission)]


def cancel(aws: Aws, s3: S3, where: tracking.Where, target: Scope, say: Callable[[str], None],
           wait_s: float = WAIT_S, poll_s: float = POLL_S) -> dict[str, Any]:
    """Cancel, wait until running runs report `cancelled` and the instances are gone, then clean up.

    Returns {"submission", "runs": final statuses of the targeted runs, "removed": [...], "forced": [...]}."""
    sub, layout = target.submission, where.layout
    backend = backends.for_submission(s3, layout, sub)
    # 1. The markers first: from here on nothing starts a targeted run, and a running one stops within ~10 s.
    if target.whole:
        s3.put_json(layout.submission_cancel(sub), {"at": contract.iso()})
    else:
        s3.put_json(layout.run_cancel(target.run_ids[0]), {"at": contract.iso()})
    # 2. Runs no container holds now: cancelled by status; whoever receives the run later drops it.
    dropped = []
    for st in tracking.read_statuses(s3, layout, target.run_ids):
        if st.state in contract.NOT_STARTED:
            ended = st.evolve(contract.CANCELLED, reason="cancelled before it started", ended_at=contract.iso())
            index.put_status(s3, layout, ended, previous=st)
            dropped.append(st.run_id)
    if dropped:
        say(f"{sub}: {len(dropped)} run(s) not started: cancelled")
    # 3. The backend starts nothing new and stops what runs.
    backend.stop(aws, s3, layout, target, say)
    # 4. Wait for the running ones to stop, upload and report.
    deadline = time.monotonic() + wait_s
    seen: dict[str, str] = {}
    while True:
        states = tracking.read_statuses(s3, layout, target.run_ids)
        for st in states:
            if seen.get(st.run_id) != st.state:
                seen[st.run_id] = st.state
                say(f"{st.run_id}: {st.state}")
        live = [st for st in states if not st.terminal]
        if not live or time.monotonic() > deadline:
            break
        time.sleep(poll_s)
    forced = []
    for st in live:  # never confirmed: what holds it goes anyway below; say what that means
        ended = st.evolve(contract.CANCELLED, ended_at=contract.iso(),
                          reason=f"cancelled; no confirmation from its worker within {wait_s:.0f} s, instance "
                                 "terminated (outputs may be incomplete)")
        index.put_status(s3, layout, ended, previous=st)
        forced.append(ended)
    # 4b. A failed run's kept instance (docs/keep.md): the marker ends its window; it is gone before the clean-up.
    from submitter import keep

    kept_ended = keep.end_windows(aws, s3, layout, target.run_ids, say, min(wait_s, keep.END_WAIT_S), poll_s)
    # 5. Clean up when the submission has nothing left to do; a run cancel leaves its worker to the other runs.
    remaining = [st for st in tracking.read_statuses(s3, layout, target.all_runs) if not st.terminal]
    removed: list[str] = []
    if target.whole or not remaining:
        say(f"{sub}: removing what the submission left")
        removed += backend.clean_up(aws, sub)
    elif forced:
        removed += backend.force_stop(aws, forced, say)
    return {"submission": sub, "runs": tracking.statuses(s3, where, target.run_ids), "removed": removed,
            "forced": [st.run_id for st in forced], "kept_ended": kept_ended}
