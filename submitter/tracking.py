"""Tracking from any machine: what a name refers to, run states, logs, results and cost, read from S3 and EC2.

No local state: a second machine with the same settings sees the same thing.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from submitter import contract
from submitter.aws.s3 import S3
from submitter.errors import UsageError

TERMINAL = contract.TERMINAL
_SUBMISSION = re.compile(r"^(?P<job>[a-z0-9-]+)-(?P<ts>\d{8}-\d{6})-(?P<token>[0-9a-f]{6})$")
DOWNLOAD_THREADS = 8
STATUS_THREADS = 32  # S3 has no batch get: status reads status documents this many at a time
MULTIPART_SIZES = (8 * 1024 * 1024, 16 * 1024 * 1024, 5 * 1024 * 1024)  # aws CLI/boto3 defaults, then common
FOLLOW_POLL_S = 2.0
T = TypeVar("T")
Warn = Callable[[str], None]


def stderr_warning(text: str) -> None:  # the default `warn`: stdout stays the command's result
    sys.stderr.write(f"warning: {text}\n")


@dataclass(frozen=True)
class Where:
    """The bucket and prefix that hold the runs; every key under them comes from `layout`."""

    bucket: str
    prefix: str

    @property
    def layout(self) -> contract.Layout:
        return contract.Layout(self.prefix)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"


def submissions(s3: S3, where: Where, job: str | None = None) -> list[str]:
    """Submission ids, oldest first (ids sort by time within a job)."""
    ids = [s for s in s3.prefixes(where.layout.submissions) if _SUBMISSION.match(s)]
    if job:
        ids = [s for s in ids if _SUBMISSION.match(s) and _SUBMISSION.match(s).group("job") == job]  # type: ignore[union-attr]
    return sorted(ids, key=lambda s: (_SUBMISSION.match(s).group("ts"), s))  # type: ignore[union-attr]


def runs_of(s3: S3, where: Where, submission_id: str, warn: Warn = stderr_warning) -> list[str]:
    """The run ids the `queued` marker lists that are the submission's (contract.is_run_of): it is read back
    from S3 and its ids become keys and paths. Any other is left out with a warning naming it."""
    runs = []
    for run_id in contract.queued_runs(s3.get_json(where.layout.queued(submission_id))):
        if contract.is_run_of(run_id, submission_id):
            runs.append(run_id)
        else:
            warn(f"{where.layout.queued(submission_id)} lists {run_id!r}, which is not a run id of {submission_id}")
    return runs


def resolve(s3: S3, where: Where, target: str, warn: Warn = stderr_warning) -> list[str]:
    """Run ids meant by a RUN, SUBMISSION or JOB name (a job means its latest submission)."""
    if contract.submission_of(target) is not None and s3.exists(where.layout.status(target)):
        return [target]
    if s3.exists(where.layout.queued(target)):
        return runs_of(s3, where, target, warn)
    latest = submissions(s3, where, target)
    if latest:
        return runs_of(s3, where, latest[-1], warn)
    raise UsageError(
        target, f"no run, submission or job of that name in {where.uri}",
        "list what exists with `submitter status --all`")


def statuses(s3: S3, where: Where, run_ids: list[str]) -> list[dict[str, Any]]:
    """Each run's status document as written (what `status --json` prints); `unknown` when there is none."""
    return _read(s3, where.layout, run_ids, lambda run_id, doc: doc or {"run_id": run_id, "state": contract.UNKNOWN})


def read_statuses(s3: S3, layout: contract.Layout, run_ids: list[str]) -> list[contract.Status]:
    """Each run's status, typed."""
    return _read(s3, layout, run_ids, lambda run_id, doc: contract.Status.from_json(doc, run_id))


def _read(s3: S3, layout: contract.Layout, run_ids: list[str], make: Callable[[str, Any], T]) -> list[T]:
    def one(run_id: str) -> T:
        return make(run_id, s3.get_json(layout.status(run_id)))

    if len(run_ids) <= 1:
        return [one(r) for r in run_ids]
    with ThreadPoolExecutor(min(STATUS_THREADS, len(run_ids))) as pool:
        return list(pool.map(one, run_ids))


@dataclass
class Downloaded:
    """What `download_results` did: per-run roots, and files fetched/skipped with their bytes."""

    roots: list[Path] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # keys (or run ids) that would be written outside DEST
    fetched: int = 0
    skipped: int = 0
    bytes: int = 0


def plan_downloads(s3: S3, where: Where, run_ids: list[str], dest: Path | None,
                   warn: Warn = stderr_warning, refused: list[str] | None = None) -> tuple[list[Path], list[Fetch]]:
    """Every output object of the runs and where it goes: DEST/<run-id>/... (default ./results/<run-id>/).
    Never outside DEST: what is not a run id, or a key that contract.safe_relative refuses, is left out with a
    warning naming it, and added to `refused`."""
    roots: list[Path] = []
    jobs: list[Fetch] = []
    refused = refused if refused is not None else []
    for run_id in run_ids:
        if contract.submission_of(run_id) is None:
            warn(f"{run_id!r} is not a run id: its outputs are not downloaded")
            refused.append(run_id)
            continue
        root = (dest or Path("results")) / run_id
        roots.append(root)
        prefix = where.layout.outputs(run_id)
        for obj in s3.objects(prefix):
            rel = obj["Key"][len(prefix):]
            if not rel or rel.endswith("/"):
                continue  # a "directory" marker, not a file
            if contract.safe_relative(rel) is None:
                warn(f"refused the key {contract.Layout.uri(where.bucket, str(obj['Key']))!r}: an empty, '.' or "
                     f"'..' segment or an absolute path in its name would be written outside {root}")
                refused.append(str(obj["Key"]))
                continue
            jobs.append(Fetch(obj["Key"], root / rel, int(obj["Size"]), str(obj.get("ETag", "")).strip('"')))
    return roots, jobs


@dataclass(frozen=True)
class Fetch:
    key: str
    path: Path
    size: int
    etag: str


def download_results(s3: S3, where: Where, run_ids: list[str], dest: Path | None,
                     on_start: Callable[[int, int], None] | None = None,
                     on_bytes: Callable[[int], None] | None = None, warn: Warn = stderr_warning) -> Downloaded:
    """Each run's outputs to DEST/<run-id>/ (never outside: plan_downloads), DOWNLOAD_THREADS files at a time.

    A file identical to the object (same size and MD5/multipart ETag) is skipped; an interrupted download
    leaves `NAME.part`, which the next call continues from where it stopped (a ranged GET)."""
    refused: list[str] = []
    roots, jobs = plan_downloads(s3, where, run_ids, dest, warn, refused)
    todo = [j for j in jobs if not identical(j.path, j.size, j.etag)]
    result = Downloaded(roots, refused, skipped=len(jobs) - len(todo))
    if on_start:
        on_start(len(todo), sum(j.size for j in todo))

    def fetch(job: Fetch) -> None:
        job.path.parent.mkdir(parents=True, exist_ok=True)
        partial = job.path.with_name(job.path.name + ".part")
        have = partial.stat().st_size if partial.is_file() else 0
        if have > job.size:
            have = 0  # the object changed since: start over
        if on_bytes and have:
            on_bytes(have)
        if have < job.size or job.size == 0:
            s3.append_range(job.key, str(partial), have, on_bytes)
        if job.etag and "-" not in job.etag and _md5(partial) != job.etag:
            partial.unlink()  # a stale partial from an older object: fetch it whole once more
            s3.append_range(job.key, str(partial), 0, None)
        os.replace(partial, job.path)

    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        list(pool.map(fetch, todo))
    result.fetched = len(todo)
    result.bytes = sum(j.size for j in todo)
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    return result


def identical(path: Path, size: int, etag: str) -> bool:
    """True when the local file has the object's bytes: same size, and the same (multipart) MD5 ETag."""
    if not path.is_file() or path.stat().st_size != size:
        return False
    if not etag:
        return True
    if "-" not in etag:
        return _md5(path) == etag
    parts = etag.rsplit("-", 1)[1]
    for part_size in MULTIPART_SIZES:
        digests = []
        with path.open("rb") as handle:
            while chunk := handle.read(part_size):
                digests.append(hashlib.md5(chunk).digest())  # noqa: S324 - S3's ETag is MD5
        if str(len(digests)) == parts:
            return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{parts}" == etag  # noqa: S324
    return False


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - S3's single-part ETag is the MD5
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def print_new_chunks(s3: S3, where: Where, run_id: str, start: int, out: Any) -> int:
    """Write the run's streamed log chunks from number `start` on; returns the next chunk number."""
    prefix = where.layout.chunks(run_id)
    keys = sorted(o["Key"] for o in s3.objects(prefix))
    for key in keys:
        name = key[len(prefix):].split(".")[0]
        if not name.isdigit() or int(name) < start:
            continue
        body = s3.get_bytes(key) or b""
        out.write(body.decode("utf-8", errors="replace"))
        out.flush()
        start = int(name) + 1
    return start


# ---------------------------------------------------------------------------------------------- logs


def run_status(s3: S3, where: Where, run_id: str) -> dict[str, Any]:
    """The run's status document; a UsageError naming how to list runs when there is no such run."""
    # Only a run id is spliced into a key (`../x` is no run, whatever S3 holds under it).
    status = s3.get_json(where.layout.status(run_id)) if contract.submission_of(run_id) else None
    if status is None:
        raise UsageError(run_id, f"no such run in {contract.Layout.uri(where.bucket, where.layout.runs)}",
                         "list runs with `submitter status --all`")
    return dict(status)


def print_logs(s3: S3, where: Where, run_id: str, out: Any, follow: bool = False, agent: bool = False,
               say: Callable[[str], None] | None = None, poll_s: float = FOLLOW_POLL_S,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Write a run's container log (or with `agent`, the agent's log) to `out`; returns the last status.

    An ended run's whole log is one object; a live run's log is the streamed chunks, which `follow` keeps
    printing until the run ends."""
    status = run_status(s3, where, run_id)
    if agent:
        out.write((s3.get_bytes(where.layout.agent_log(run_id)) or b"").decode("utf-8", errors="replace"))
        out.flush()
        return status
    if status.get("state") in TERMINAL and not follow:
        whole = s3.get_bytes(where.layout.container_log(run_id))
        if whole is not None:
            out.write(whole.decode("utf-8", errors="replace"))
            out.flush()
            return status
    nxt = print_new_chunks(s3, where, run_id, 0, out)
    told = ""
    while follow and status.get("state") not in TERMINAL:
        if say and status.get("state") != told:
            told = str(status.get("state"))
            say(f"{run_id}: {told}")
        sleep(poll_s)
        status = run_status(s3, where, run_id)
        nxt = print_new_chunks(s3, where, run_id, nxt, out)
    if follow:
        nxt = print_new_chunks(s3, where, run_id, nxt, out)  # the final chunk lands before the final status
        if say:
            say(f"{run_id}: {status.get('state')}" + (f" ({status['reason']})" if status.get("reason") else ""))
    return status


# ---------------------------------------------------------------------------------------------- cost


parse_time = contract.parse_iso


def submissions_since(s3: S3, where: Where, since: datetime) -> list[str]:
    """Submission ids whose id timestamp is at or after `since` (ids carry their submit time, UTC)."""
    found = []
    for sub in submissions(s3, where):
        match = _SUBMISSION.match(sub)
        assert match
        if datetime.strptime(match.group("ts"), "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc) >= since:
            found.append(sub)
    return found


def average_price(points: list[tuple[datetime, float]], start: datetime, end: datetime) -> float | None:
    """The time-weighted spot price over [start, end] from price-change points (each holds until the next)."""
    if not points:
        return None
    if end <= start:
        before = [p for t, p in points if t <= start]
        return before[-1] if before else points[0][1]
    total = 0.0
    for i, (moment, price) in enumerate(points):
        seg_start = max(start, moment) if i else start  # the first point's price also covers any time before it
        seg_end = min(end, points[i + 1][0]) if i + 1 < len(points) else end
        if seg_end > seg_start:
            total += price * (seg_end - seg_start).total_seconds()
    return total / (end - start).total_seconds()


PriceHistory = Callable[[str, str, datetime, datetime], list[tuple[datetime, float]]]


def costs(s3: S3, where: Where, run_ids: list[str], history: PriceHistory, region: str,
          now: datetime | None = None) -> dict[str, Any]:
    """Per run: runtime x time-weighted spot price over that runtime for its type and AZ, plus its data volume
    (EBS gp3), and what the same hours would cost on demand where the on-demand price is known.

    `history(type, az, start, end)` gives price points; one call per (type, AZ) covers every run in it."""
    from submitter import keep, pricing

    now = now or datetime.now(timezone.utc)
    states = statuses(s3, where, run_ids)
    volume: dict[str, int | None] = {}
    for st in states:
        sub = str(st.get("submission_id") or "")
        if sub and sub not in volume:
            spec = s3.get_json(where.layout.run_spec(st["run_id"])) or {}
            gb = ((spec.get("spec") or {}).get("resources") or {}).get("volume_gb")
            volume[sub] = int(gb) if gb else None
            region = str(spec.get("region") or region)
    windows: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    spans: list[tuple[dict[str, Any], datetime | None, datetime | None]] = []
    for st in states:
        start = parse_time(st.get("started_at"))
        end = keep.billed_until(st, parse_time(st.get("ended_at")) or (  # a kept instance: its window too
            now if st.get("state") in contract.ACTIVE else parse_time(st.get("heartbeat_at"))), now)
        spans.append((st, start, end))
        pool = (str(st.get("instance_type") or ""), str(st.get("availability_zone") or ""))
        if start and end and all(pool):
            lo, hi = windows.get(pool, (start, end))
            windows[pool] = (min(lo, start), max(hi, end))
    points = {pool: history(pool[0], pool[1], lo - timedelta(minutes=1), hi) for pool, (lo, hi) in windows.items()}
    rows = []
    for st, start, end in spans:
        pool = (str(st.get("instance_type") or ""), str(st.get("availability_zone") or ""))
        hours = (end - start).total_seconds() / 3600 if start and end and end > start else 0.0
        row: dict[str, Any] = {
            "run_id": st["run_id"], "submission_id": st.get("submission_id"), "state": st.get("state"),
            "instance_type": pool[0] or None, "availability_zone": pool[1] or None, "hours": round(hours, 4),
            "attempts": st.get("attempt", 0),
        }
        price = average_price(points.get(pool, []), start, end) if start and end else None
        row["price_source"] = "spot price history" if price is not None else None
        if price is None and isinstance(st.get("price"), (int, float)) and st.get("price"):
            price, row["price_source"] = float(st["price"]), "price recorded by the agent"
        gb = volume.get(str(st.get("submission_id") or ""))
        ebs = pricing.ebs_per_hour(region, gb) * hours if gb else 0.0
        if start is None:  # never started: nothing billed for it
            price, row["price_source"] = None, "not started"
        row.update({"spot_price": round(price, 6) if price is not None else None,
                    "spot_cost": round(price * hours, 6) if price is not None else (0.0 if start is None else None),
                    "volume_gb": gb, "ebs_cost": round(ebs, 6)})
        row["total"] = round(row["spot_cost"] + ebs, 6) if row["spot_cost"] is not None else None
        on_demand = pricing.on_demand(region, pool[0]) if pool[0] else None
        row["on_demand_cost"] = round(on_demand * hours + ebs, 6) if on_demand is not None else None
        row["savings"] = (round(1 - row["total"] / row["on_demand_cost"], 3)
                          if row["total"] is not None and row["on_demand_cost"] else None)
        rows.append(row)
    known = [r for r in rows if r["total"] is not None]
    compared = [r for r in known if r["on_demand_cost"] is not None]
    total = round(sum(r["total"] for r in known), 6)
    on_demand_total = round(sum(r["on_demand_cost"] for r in compared), 6)
    summary = {"runs": len(rows), "priced": len(known), "total": total,
               "on_demand_total": on_demand_total if compared else None,
               "savings": round(1 - sum(r["total"] for r in compared) / on_demand_total, 3)
               if compared and on_demand_total else None,
               "currency": "USD", "region": region,
               "basis": "runtime x time-weighted spot price for the run's type and AZ, plus its data volume "
                        "(gp3); instance boot and drain time are not included"}
    return {"runs": rows, "total": summary}


def prices(spot: list[Any], region: str) -> list[dict[str, Any]]:
    """Spot offers (ec2.SpotPrice), cheapest first, with the on-demand price and the saving where known."""
    from submitter import pricing

    rows = []
    for p in sorted(spot, key=lambda p: (p.price, p.instance_type, p.availability_zone)):
        od = pricing.on_demand(region, p.instance_type)
        rows.append({"instance_type": p.instance_type, "availability_zone": p.availability_zone, "spot_price": p.price,
                     "on_demand": od, "savings": round(1 - p.price / od, 3) if od else None,
                     "as_of": contract.iso(p.timestamp)})
    return rows
