"""Stage a submission: inputs to S3 (content-addressed, uploaded once), secrets to SSM, the documents the
instances read (docs/runtime-contract.md), and one queue message per run.

Idempotent for one submission id: a retried submit finds what is there and adds only what is missing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from submitter.aws.errors import translate
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.aws.sqs import ensure_queue, send_runs
from submitter.plan import DEADMAN_MARGIN_S, Plan
from submitter.progress import Progress

UPLOAD_THREADS = 8
COMPLETE_MARKER = ".submitter-complete"


@dataclass(frozen=True)
class StagedInput:
    uri: str
    target: str
    kind: str  # "dir" or "file"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stage(aws: Aws, plan: Plan, image_uri: str, secrets: dict[str, str], progress: Progress) -> str:
    """Upload everything the workers need and queue the runs; returns the queue URL."""
    assert plan.bucket
    s3 = S3(aws.client("s3"), plan.bucket)
    spec = plan.loaded.spec
    base = f"{plan.prefix}/submissions/{plan.submission_id}"
    inputs = [_stage_input(s3, plan, item.source, item.target, progress) for item in spec.inputs]
    if secrets:
        _put_secrets(aws, plan, secrets)
    registry = image_uri.split("/", 1)[0]
    s3.put_json(f"{base}/submission.json", {
        "version": 1,
        "submission_id": plan.submission_id,
        "job": plan.job,
        "region": plan.region,
        "queue_name": plan.names.queue,
        "image": image_uri,
        "registry": registry,
        "command": plan.command,
        "volume_mount": spec.volume_mount,
        "outputs": spec.outputs,
        "checkpoints": spec.checkpoints,
        "gpus": spec.resources.gpus,
        "max_runtime": spec.limits.max_runtime,
        "max_cost": spec.limits.max_cost,
        "retries": spec.retries.model_dump(),
        "inputs": [i.__dict__ for i in inputs],
        "secrets": {"names": sorted(secrets), "ssm_prefix": f"/submitter/{plan.submission_id}/"},
        "grace_seconds": int(spec.limits.stop_grace),
        "deadman_minutes": int((spec.limits.max_runtime + DEADMAN_MARGIN_S + 59) // 60),
    })
    agent = resources.files("submitter.boot").joinpath("agent.py").read_bytes()
    s3.put_bytes(f"{base}/agent.py", agent, "text/x-python")
    git = _git_state(plan.loaded.path.parent)
    created = now_iso()
    for run in plan.runs:
        run_base = f"{plan.prefix}/runs/{run.run_id}"
        s3.put_json(f"{run_base}/spec.json", {
            "run_id": run.run_id, "submission_id": plan.submission_id, "job": plan.job, "index": run.index,
            "sweep": run.sweep, "env": run.env, "command": plan.command, "image": image_uri,
            "spec_file": plan.spec_file, "spec": spec.model_dump(mode="json"), "git": git,
            "region": plan.region, "instance_types": spec.resources.instance_types,
            "max_price": spec.resources.max_price, "created_at": created,
        })
        if not s3.exists(f"{run_base}/status.json"):
            s3.put_json(f"{run_base}/status.json", {
                "run_id": run.run_id, "submission_id": plan.submission_id, "job": plan.job, "state": "queued",
                "attempt": 0, "interruptions": 0, "failures": 0, "created_at": created,
            })
    sqs = aws.client("sqs")
    queue = plan.queue
    url, _ = ensure_queue(sqs, queue["QueueName"], queue["DeadLetterQueueName"], queue["VisibilityTimeout"],
                          queue["MessageRetentionPeriod"], queue["maxReceiveCount"], plan.tags)
    # The marker makes a retried submit idempotent: runs are queued once per submission id.
    if not s3.exists(f"{base}/queued"):
        send_runs(sqs, url, [{"run_id": r.run_id, "index": r.index, "env": r.env} for r in plan.runs])
        s3.put_json(f"{base}/queued", {"runs": [r.run_id for r in plan.runs], "at": created})
    progress.done(f"staged {len(plan.runs)} run(s) and queued them on {queue['QueueName']}")
    return url


def _stage_input(s3: S3, plan: Plan, source: str, target: str, progress: Progress) -> StagedInput:
    if source.startswith("s3://"):
        return StagedInput(source, target, "dir" if source.endswith("/") else "file")
    local = plan.loaded.local_inputs[source]
    files = _files(local)
    digest = _tree_digest(local, files)
    prefix = f"{plan.prefix}/inputs/{digest}/"
    kind = "dir" if local.is_dir() else "file"
    uri = f"s3://{plan.bucket}/{prefix}" + ("" if kind == "dir" else local.name)
    if s3.exists(prefix + COMPLETE_MARKER):
        progress.done(f"input {source}: unchanged, already in S3")
        return StagedInput(uri, target, kind)
    total = sum(p.stat().st_size for _, p in files)
    progress.step(f"uploading input {source}: {len(files)} file(s), {total} bytes")
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda item: s3.upload_file(str(item[1]), prefix + item[0]), files))
    s3.put_json(prefix + COMPLETE_MARKER, {"files": len(files), "bytes": total, "source": str(local)})
    return StagedInput(uri, target, kind)


def _files(local: Path) -> list[tuple[str, Path]]:
    if local.is_file():
        return [(local.name, local)]
    found = []
    for root, _, names in os.walk(local):
        for name in names:
            path = Path(root) / name
            found.append((path.relative_to(local).as_posix(), path))
    return sorted(found)


def _tree_digest(local: Path, files: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256(b"dir" if local.is_dir() else b"file")
    for rel, path in files:
        digest.update(rel.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _put_secrets(aws: Aws, plan: Plan, secrets: dict[str, str]) -> None:
    ssm = aws.client("ssm")
    for name, value in secrets.items():
        with translate("ssm", "PutParameter", "allow ssm:PutParameter on parameter/submitter/*"):
            ssm.put_parameter(Name=f"/submitter/{plan.submission_id}/{name}", Value=value, Type="SecureString",
                              Overwrite=True, Description=f"submitter secret for {plan.submission_id}")


def _git_state(directory: Path) -> dict[str, Any] | None:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    return {"commit": commit, "dirty": bool(git("status", "--porcelain"))}
