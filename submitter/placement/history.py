"""Our own record, read from S3: the observed interruption rate per spot pool (from the instance reports every
worker leaves) and a job's earlier runtimes and checkpoint interval (from its runs' status documents and
checkpoint objects). Read-only, bounded, concurrent; the plan goes on without them when S3 cannot be read.

Observed rate: for each pool (type, AZ), interruptions / instance-hours over the reports of the newest
MAX_SUBMISSIONS submissions under the settings' bucket and prefix (every job's, at most MAX_REPORTS reports).
A report counts one interruption when its state is `interrupted`; its hours are `time - booted_at` (the agent's
start to its exit report). A report without `booted_at` (written before it existed, or by the boot script on a
boot failure) counts its interruption but no hours; an instance that vanished without a report is not seen.
Reports are final once written (a worker writes one on exit), so they are cached in SUBMITTER_HOME by key and
ETag: a later submit only lists the prefixes and reads the new ones.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from submitter import contract
from submitter.placement.facts import JobHistory, Observed, Pool

MAX_SUBMISSIONS = 40  # newest submissions whose instance reports are read
MAX_REPORTS = 400
JOB_SUBMISSIONS = 5  # newest submissions of the job whose runs inform its runtime
JOB_RUNS = 20
CHECKPOINT_RUNS = 3  # succeeded runs whose checkpoint objects are listed for the interval
SYNC_GAP_S = 5.0  # objects written closer together than this belong to one checkpoint sync
THREADS = 16
CACHE_NAME = "instance-reports.json"
T = TypeVar("T")
R = TypeVar("R")


def _parallel(function: Callable[[T], R], items: list[T]) -> list[R]:
    if len(items) <= 1:
        return [function(i) for i in items]
    with ThreadPoolExecutor(min(THREADS, len(items))) as pool:
        return list(pool.map(function, items))


def _seconds(start: Any, end: Any) -> float | None:
    begun, ended = contract.parse_iso(start), contract.parse_iso(end)
    if begun is None or ended is None or ended < begun:
        return None
    return (ended - begun).total_seconds()


# ------------------------------------------------------------------------------------ observed rates


@dataclass(frozen=True)
class Report:
    """What an instance report tells the rate: its pool, whether it was interrupted, the hours it lived."""

    pool: Pool
    interrupted: bool
    hours: float

    @classmethod
    def of(cls, doc: Any) -> Report | None:
        if not isinstance(doc, dict) or not doc.get("instance_type") or not doc.get("availability_zone"):
            return None
        seconds = _seconds(doc.get("booted_at"), doc.get("time"))
        return cls((str(doc["instance_type"]), str(doc["availability_zone"])),
                   doc.get("state") == contract.INTERRUPTED, (seconds or 0.0) / 3600)


def rates(reports: Iterable[Report]) -> dict[Pool, Observed]:
    """Interruptions and instance-hours per pool."""
    counts: dict[Pool, tuple[int, float]] = {}
    for report in reports:
        interruptions, hours = counts.get(report.pool, (0, 0.0))
        counts[report.pool] = (interruptions + report.interrupted, hours + report.hours)
    return {pool: Observed(n, round(h, 6)) for pool, (n, h) in counts.items()}


def _summary(doc: Any) -> dict[str, Any]:
    """The fields of a report the rate needs (what the cache keeps)."""
    fields = ("instance_type", "availability_zone", "state", "time", "booted_at")
    return {k: doc.get(k) for k in fields} if isinstance(doc, dict) else {}


def observed(s3: Any, layout: contract.Layout, submissions: list[str], cache_dir: Path | None) -> tuple[
        dict[Pool, Observed], str]:
    """Observed rates from the reports of `submissions` (oldest first, as tracking lists them), with a note."""
    newest = list(reversed(submissions))[:MAX_SUBMISSIONS]
    listed = _parallel(lambda sub: list(s3.objects(layout.instances(sub))), newest)
    objects = [o for found in listed for o in found if str(o["Key"]).endswith(".json")][:MAX_REPORTS]
    cache = _read_cache(cache_dir)
    wanted = [o for o in objects if cache.get(o["Key"], {}).get("etag") != o.get("ETag")]
    for obj, doc in zip(wanted, _parallel(lambda o: s3.get_json(o["Key"]), wanted), strict=True):
        cache[obj["Key"]] = {"etag": obj.get("ETag"), "doc": _summary(doc)}
    if wanted:
        _write_cache(cache_dir, {o["Key"]: cache[o["Key"]] for o in objects})
    reports = [r for r in (Report.of(cache[o["Key"]]["doc"]) for o in objects) if r is not None]
    bound = (f"the newest {len(newest)} submission(s)" if len(submissions) > len(newest)
             else f"{len(newest)} submission(s)")
    note = (f"observed interruption rates from {len(reports)} instance report(s) of {bound} "
            f"in this bucket/prefix ({len(objects) - len(wanted)} cached)")
    return rates(reports), note


def _read_cache(cache_dir: Path | None) -> dict[str, dict[str, Any]]:
    if cache_dir is None:
        return {}
    try:
        loaded = json.loads((cache_dir / CACHE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _write_cache(cache_dir: Path | None, entries: dict[str, Any]) -> None:
    if cache_dir is None:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_dir / (CACHE_NAME + ".part")
        partial.write_text(json.dumps(entries))
        partial.replace(cache_dir / CACHE_NAME)
    except OSError:
        pass  # a read-only home only costs the reads next time


# ------------------------------------------------------------------------------------ the job's history


def sync_interval(times: Iterable[datetime]) -> float | None:
    """The median spacing (s) between checkpoint syncs, from the objects' LastModified times: objects written
    within SYNC_GAP_S of each other are one sync. None with fewer than two syncs."""
    syncs: list[datetime] = []
    for moment in sorted(times):
        if not syncs or (moment - syncs[-1]).total_seconds() > SYNC_GAP_S:
            syncs.append(moment)
        else:
            syncs[-1] = moment  # a sync ends with its last object
    gaps = [(b - a).total_seconds() for a, b in zip(syncs, syncs[1:], strict=False)]
    return statistics.median(gaps) if gaps else None


def job_history(s3: Any, layout: contract.Layout, submissions: list[str],
                runs_of: Callable[[str], list[str]]) -> tuple[JobHistory, str]:
    """Runtimes of the job's earlier succeeded, never-interrupted runs (newest JOB_SUBMISSIONS submissions, at most
    JOB_RUNS runs; an interrupted run's attempts split its runtime, so it is left out) and the checkpoint
    interval observed on up to CHECKPOINT_RUNS of them. `submissions` are the job's, oldest first."""
    newest = list(reversed(submissions))[:JOB_SUBMISSIONS]
    runs = [r for found in _parallel(runs_of, newest) for r in found][:JOB_RUNS]
    docs = _parallel(lambda run: contract.Status.from_json(s3.get_json(layout.status(run)), run), runs)
    done = [(s.run_id, _seconds(s.started_at, s.ended_at)) for s in docs
            if s.state == contract.SUCCEEDED and s.interruptions == 0]
    runtimes = [seconds for _, seconds in done if seconds]
    listed = _parallel(lambda run: list(s3.objects(layout.checkpoints(run))), [r for r, _ in done[:CHECKPOINT_RUNS]])
    intervals = [i for i in (sync_interval(o["LastModified"] for o in found) for found in listed) if i]
    interval = statistics.median(intervals) if intervals else None
    if not submissions:
        return JobHistory(), "no earlier runs of this job in this bucket/prefix"
    note = (f"job history: {len(runtimes)} succeeded uninterrupted run(s) of {len(runs)} read from the newest "
            f"{len(newest)} submission(s) of this job")
    note += (f"; checkpoint interval {interval:.0f} s observed (median spacing of checkpoint writes)"
             if interval else "; no checkpoint interval observed")
    return JobHistory(runtimes, interval), note
