"""Tracking from any machine: what a name refers to, run states, and results, all read from S3.

No local state: a second machine with the same settings sees the same thing.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitter.aws.s3 import S3
from submitter.errors import UsageError

TERMINAL = {"succeeded", "failed", "cancelled"}
_SUBMISSION = re.compile(r"^(?P<job>[a-z0-9-]+)-(?P<ts>\d{8}-\d{6})-(?P<token>[0-9a-f]{6})$")
DOWNLOAD_THREADS = 8


@dataclass(frozen=True)
class Where:
    bucket: str
    prefix: str

    def run(self, run_id: str) -> str:
        return f"{self.prefix}/runs/{run_id}/"

    def submission(self, submission_id: str) -> str:
        return f"{self.prefix}/submissions/{submission_id}/"


def submissions(s3: S3, where: Where, job: str | None = None) -> list[str]:
    """Submission ids, oldest first (ids sort by time within a job)."""
    ids = [s for s in s3.prefixes(f"{where.prefix}/submissions/") if _SUBMISSION.match(s)]
    if job:
        ids = [s for s in ids if _SUBMISSION.match(s) and _SUBMISSION.match(s).group("job") == job]  # type: ignore[union-attr]
    return sorted(ids, key=lambda s: (_SUBMISSION.match(s).group("ts"), s))  # type: ignore[union-attr]


def runs_of(s3: S3, where: Where, submission_id: str) -> list[str]:
    queued = s3.get_json(where.submission(submission_id) + "queued") or {}
    return list(queued.get("runs", []))


def resolve(s3: S3, where: Where, target: str) -> list[str]:
    """Run ids meant by a RUN, SUBMISSION or JOB name (a job means its latest submission)."""
    if s3.exists(where.run(target) + "status.json"):
        return [target]
    if s3.exists(where.submission(target) + "queued"):
        return runs_of(s3, where, target)
    latest = submissions(s3, where, target)
    if latest:
        return runs_of(s3, where, latest[-1])
    raise UsageError(
        target, f"no run, submission or job of that name in s3://{where.bucket}/{where.prefix}/",
        "list what exists with `submitter status --all`")


def statuses(s3: S3, where: Where, run_ids: list[str]) -> list[dict[str, Any]]:
    def one(run_id: str) -> dict[str, Any]:
        return s3.get_json(where.run(run_id) + "status.json") or {"run_id": run_id, "state": "unknown"}

    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        return list(pool.map(one, run_ids))


def download_results(s3: S3, where: Where, run_ids: list[str], dest: Path | None) -> list[Path]:
    """Each run's outputs to DEST/<run-id>/ (default ./results/<run-id>/); identical files are skipped."""
    jobs: list[tuple[str, Path, int]] = []
    targets = []
    for run_id in run_ids:
        root = (dest or Path("results")) / run_id
        targets.append(root)
        prefix = where.run(run_id) + "outputs/"
        for obj in s3.objects(prefix):
            rel = obj["Key"][len(prefix):]
            if rel and not rel.endswith("/"):
                jobs.append((obj["Key"], root / rel, int(obj["Size"])))

    def fetch(job: tuple[str, Path, int]) -> None:
        key, path, size = job
        if path.is_file() and path.stat().st_size == size:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        s3.download(key, str(partial))
        os.replace(partial, path)

    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        list(pool.map(fetch, jobs))
    for root in targets:
        root.mkdir(parents=True, exist_ok=True)
    return targets


def print_new_chunks(s3: S3, where: Where, run_id: str, start: int, out: Any) -> int:
    """Write the run's streamed log chunks from number `start` on; returns the next chunk number."""
    prefix = where.run(run_id) + "logs/chunks/"
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
