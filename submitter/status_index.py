"""`status` of many runs at the cost of a few: each submission's run index (runtime/index.py) listed once gives
every run's latest state; status documents are read only for the runs the index cannot settle (active ones,
which change on every heartbeat; a tie; no entry) and, within a fixed budget, for the rest. A submission
without an index (staged before it existed) is read document by document, as before.
"""

from __future__ import annotations

from typing import Any

from submitter import contract, tracking
from submitter.aws.s3 import S3
from submitter.runtime import index

DOCUMENT_READS = 32  # documents read at least (the unsettled runs first): one round of tracking.STATUS_THREADS
INDEX = "index"  # the `source` of a row that came from the run index, not from the run's status document
# Which settled runs' documents are worth the budget first: those whose reason the table shows.
_WORTH = {contract.FAILED: 0, contract.CANCELLED: 1, contract.INTERRUPTED: 2, contract.QUEUED: 3,
          contract.SUCCEEDED: 4}


def statuses(s3: S3, where: tracking.Where, run_ids: list[str], detail: bool = False,
             budget: int = DOCUMENT_READS) -> list[dict[str, Any]]:
    """Each run's status (as tracking.statuses), in `run_ids` order; with `detail` every document is read."""
    if detail:
        return tracking.statuses(s3, where, run_ids)
    rows: dict[str, dict[str, Any]] = {}
    unsettled: list[str] = []
    settled: list[tuple[dict[str, Any], str]] = []
    for sub, runs in _by_submission(run_ids).items():
        if sub is None:
            unsettled += runs
            continue
        keys = [str(o["Key"]) for o in s3.objects(where.layout.index(sub))]
        latest = index.latest(keys, where.layout, sub)
        for run_id in runs:
            row, tied = latest.get(run_id, (None, True))
            if row is None or tied or row["state"] in contract.ACTIVE:
                unsettled.append(run_id)
            else:
                settled.append((row, sub))
    settled.sort(key=lambda item: _WORTH.get(str(item[0]["state"]), 5))
    spare = max(budget - len(unsettled), 0)
    read = unsettled + [row["run_id"] for row, _ in settled[:spare]]
    for row, sub in settled[spare:]:
        rows[row["run_id"]] = {**{k: v for k, v in row.items() if k != "seq"}, "submission_id": sub,
                               "source": INDEX}
    for run_id, doc in zip(read, tracking.statuses(s3, where, read), strict=True):
        rows[run_id] = doc
    return [rows[r] for r in run_ids]


def complete(s3: S3, where: tracking.Where, states: list[dict[str, Any]]) -> int:
    """Put the index entry of every ended run whose document the index does not show yet; returns how many.

    The writer of a final document puts its entry right after it, and whoever waited for that document may
    remove the writer's role (and end its instance) in between: `submit --wait` calls this first. An entry is a
    function of its document, so one put here and one by the writer are the same key, never a tie."""
    put = 0
    ended = {st["run_id"]: st for st in states if st.get("state") in contract.TERMINAL}
    for sub, runs in _by_submission(list(ended)).items():
        if sub is None:
            continue
        keys = {str(o["Key"]) for o in s3.objects(where.layout.index(sub))}
        for run_id in runs:
            key = index.entry_key(where.layout, contract.Status.from_json(ended[run_id], run_id))
            if key is not None and key not in keys:
                s3.put_bytes(key, b"")
                put += 1
    return put


def _by_submission(run_ids: list[str]) -> dict[str | None, list[str]]:
    groups: dict[str | None, list[str]] = {}
    for run_id in run_ids:
        groups.setdefault(contract.submission_of(run_id), []).append(run_id)
    return groups


def from_index(states: list[dict[str, Any]]) -> int:
    """How many rows came from the run index rather than a status document."""
    return sum(1 for st in states if st.get("source") == INDEX)
