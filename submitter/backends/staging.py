"""Staging every backend shares (docs/runtime-contract.md): local inputs to S3 (content-addressed, uploaded
once), secrets to SSM, the submission document, each run's spec and first status, the runtime, and the
`queued` marker. Idempotent for one submission id: a retried submit adds only what is missing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitter import contract
from submitter.aws import ssm as ssm_api
from submitter.aws.s3 import S3
from submitter.aws.s3 import pin as s3_pin
from submitter.aws.session import Aws
from submitter.plan import Plan
from submitter.progress import Progress
from submitter.runtime import index

UPLOAD_THREADS = 8
STAGE_THREADS = 16  # runs staged at a time (a bounded pool: S3 and the client's connection pool)
DIGEST_CHARS = 32  # a staged input's prefix is Layout.input(DIGEST)


@dataclass(frozen=True)
class StagedInput:
    uri: str
    target: str
    kind: str  # "dir" or "file"
    source: str = ""  # as the spec wrote it
    pin: dict[str, Any] | None = None  # an s3:// source as it was at submit time (aws.s3.pin), for a rerun

    def document(self) -> dict[str, str]:
        """What the runtime reads (the submission document's `inputs`)."""
        return {"uri": self.uri, "target": self.target, "kind": self.kind}

    def record(self, layout: contract.Layout, bucket: str) -> dict[str, Any]:
        """What the run record keeps of it: enough to stage the same bytes again (docs/runtime-contract.md)."""
        digest = contract.staged_digest(layout, bucket, self.uri)
        return {"source": self.source, "target": self.target, "uri": self.uri, "kind": self.kind,
                **({"digest": digest} if digest else {"pin": self.pin})}


def stage_inputs(s3: S3, plan: Plan, progress: Progress) -> list[StagedInput]:
    return [_stage_input(s3, plan, item.source, item.target, progress) for item in plan.spec.inputs]


def _stage_input(s3: S3, plan: Plan, source: str, target: str, progress: Progress) -> StagedInput:
    if source.startswith("s3://"):
        kind = "dir" if source.endswith("/") else "file"
        if contract.staged_digest(plan.layout, s3.bucket, source):  # a rerun's input, already staged by digest
            return StagedInput(source, target, kind, source)
        return StagedInput(source, target, kind, source, _pin(s3, source))
    local = plan.loaded.local_inputs[source]
    files = input_files(local)
    digest = _tree_digest(local, files)
    prefix = plan.layout.input(digest)
    kind = "dir" if local.is_dir() else "file"
    uri = contract.Layout.uri(s3.bucket, prefix) + ("" if kind == "dir" else local.name)
    if s3.exists(plan.layout.input_complete(digest)):
        progress.done(f"input {source}: unchanged, already in S3")
        return StagedInput(uri, target, kind, source)
    total = sum(p.stat().st_size for _, p in files)
    progress.step(f"uploading input {source}: {len(files)} file(s), {total} bytes")
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda item: s3.upload_file(str(item[1]), prefix + item[0]), files))
    # Written last: an upload cut short is not taken for a whole one by the next submit.
    s3.put_json(plan.layout.input_complete(digest), {"files": len(files), "bytes": total, "source": str(local)})
    return StagedInput(uri, target, kind, source)


def _pin(s3: S3, source: str) -> dict[str, Any]:
    """The source as it is now (aws.s3.pin); one this identity cannot read is recorded as not pinned, with the
    reason: the instance role may still read it, and a rerun then says it cannot tell whether it changed."""
    from submitter.errors import AwsError

    try:
        return s3_pin(s3.client, source)
    except AwsError as err:
        return {"unpinned": err.what}


def input_files(local: Path) -> list[tuple[str, Path]]:
    """The files of a local input as (key below its staged prefix, path): what is uploaded, and what the plan
    measures against S3's key limit."""
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
    return digest.hexdigest()[:DIGEST_CHARS]


def put_secrets(aws: Aws, plan: Plan, secrets: dict[str, str]) -> None:
    if not secrets:
        return
    ssm = ssm_api.client(aws)
    for name, value in secrets.items():
        parameter = contract.secrets_prefix(plan.submission_id) + name
        ssm_api.put_secret(ssm, parameter, value, f"submitter secret for {plan.submission_id}")
        ssm_api.tag_secret(ssm, parameter, plan.tags)  # the submission's, so clean-up and gc find it


def delete_secrets(aws: Aws, submission: str) -> list[str]:
    """Remove the submission's secrets (clean-up after its last run, cancel, gc); returns what went."""
    ssm = ssm_api.client(aws)
    names = ssm_api.secrets_under(ssm, contract.secrets_prefix(submission))
    return [f"secret {name}" for name in ssm_api.delete_secrets(ssm, names)]


def git_state(directory: Path) -> dict[str, Any] | None:
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


def submission_doc(plan: Plan, image_uri: str, inputs: list[StagedInput], secrets: dict[str, str],
                   **backend_fields: Any) -> dict[str, Any]:
    """The submission document (Layout.submission_doc): everything the runtime needs; a backend adds its own fields."""
    spec = plan.spec
    return {
        "version": contract.SUBMISSION_VERSION,
        "submission_id": plan.submission_id,
        "job": plan.job,
        "region": plan.region,
        "image": image_uri,
        "registry": image_uri.split("/", 1)[0],
        "command": plan.command,
        "volume_mount": spec.volume_mount,
        "outputs": spec.outputs,
        "checkpoints": spec.checkpoints,
        "gpus": spec.resources.gpus,
        "max_runtime": spec.limits.max_runtime,
        "max_cost": spec.limits.max_cost,
        "checkpoint_warn_after": spec.limits.checkpoint_warn_after,
        "retries": spec.retries.model_dump(),
        "inputs": [i.document() for i in inputs],
        "secrets": {"names": sorted(secrets), "ssm_prefix": contract.secrets_prefix(plan.submission_id)},
        **({"budget": {"usd": plan.budget}} if plan.budget is not None else {}),  # runtime/ledger.py reads it
        **backend_fields,
    }


def put_runtime(s3: S3, plan: Plan) -> None:
    """The instance runtime (one zipapp) that the boot script or the Batch command fetches and checks by hash."""
    from submitter.runtime import artefact

    s3.put_bytes(plan.layout.runtime(plan.submission_id), artefact.build(), "application/zip")


def stage_runs(s3: S3, plan: Plan, image_uri: str, created: str, inputs: list[StagedInput] | None = None,
               **backend_fields: Any) -> None:
    """Each run's spec (Layout.run_spec), and its first status (`queued`, with its run index entry) unless the
    runs were queued already (a retried submit: a worker may hold them by now). STAGE_THREADS objects at a
    time: for a 1,000-run sweep, one put after another was most of submit's time (bench/staging.py).

    The record is what `rerun` reproduces and `diff` compares: `inputs` (digests and pins), and, for a rerun,
    what the LoadedSpec's `record` adds (the run it reproduces, the overrides, the original's git state)."""
    spec = plan.spec
    extra = plan.loaded.record
    git = extra["git"] if "git" in extra else git_state(plan.loaded.path.parent)
    staged = [i.record(plan.layout, s3.bucket) for i in inputs or []]
    shared = {"submission_id": plan.submission_id, "job": plan.job, "command": plan.command, "image": image_uri,
              "spec_file": plan.spec_file, "spec": spec.model_dump(mode="json"), "git": git, "region": plan.region,
              "instance_types": spec.resources.instance_types, "max_price": spec.resources.max_price,
              "inputs": staged, "not_recorded": contract.NOT_RECORDED, **backend_fields, **extra,
              "created_at": created}
    first = not is_queued(s3, plan)  # one request for the whole submission, not one per run

    def one(run: Any) -> None:
        s3.put_json(plan.layout.run_spec(run.run_id), {
            "run_id": run.run_id, "index": run.index, "sweep": run.sweep, "env": run.env, **shared})
        if first:
            index.put_status(s3, plan.layout, contract.Status(
                run.run_id, plan.submission_id, plan.job, contract.QUEUED, created_at=created))

    with ThreadPoolExecutor(min(STAGE_THREADS, max(len(plan.runs), 1))) as pool:
        list(pool.map(one, plan.runs))


def messages(plan: Plan) -> list[dict[str, Any]]:
    return [contract.run_message(r.run_id, r.index, r.env) for r in plan.runs]


def is_queued(s3: S3, plan: Plan) -> bool:
    return s3.exists(plan.layout.queued(plan.submission_id))


def mark_queued(s3: S3, plan: Plan, created: str) -> None:
    """The runs are handed over: makes a retried submit idempotent, and lists the submission's runs."""
    s3.put_json(plan.layout.queued(plan.submission_id), {"runs": [r.run_id for r in plan.runs], "at": created})
