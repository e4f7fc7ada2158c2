"""Submitting to AWS Batch: the shared staging plus the runs by array index (Layout.batch_runs), the job
role, a job definition, and one job (an array job for a sweep); and cancelling it by terminating the job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from submitter import contract, ownership
from submitter.aws import batch as batch_api
from submitter.aws import iam as iam_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends import staging
from submitter.backends.batch.job import (
    GPU_JOB_QUEUE,
    JOB_QUEUE,
    job_definition,
    job_role_policy,
    submit_params,
)
from submitter.errors import SettingsError
from submitter.plan import Plan, uses_gpu
from submitter.progress import Progress
from submitter.runtime import index

ECS_TASKS = "ecs-tasks.amazonaws.com"
GRACE_S = 20  # Batch sends SIGKILL 30 s after SIGTERM


def queue_for(plan: Plan) -> str:
    return GPU_JOB_QUEUE if uses_gpu(plan.spec) else JOB_QUEUE


def submit(aws: Aws, plan: Plan, image_uri: str, secrets: dict[str, str], progress: Progress) -> dict[str, Any]:
    """Stage the submission's documents, register its job definition and submit one job (an array job for a
    sweep). A retried submit with the same id submits nothing twice: its batch record (Layout.batch_record)
    names the job."""
    assert plan.bucket
    batch = batch_api.client(aws)
    queue = queue_for(plan)
    if batch_api.job_queue(batch, queue) is None:
        raise SettingsError("resources.backend: batch", f"there is no AWS Batch job queue {queue!r}",
                            "run `submitter init --batch` once for this account and region")
    s3 = S3.connect(aws, plan.bucket)
    layout, sub = plan.layout, plan.submission_id
    recorded = s3.get_json(layout.batch_record(sub))
    if recorded:
        progress.done(f"already submitted as AWS Batch job {recorded['job_id']} on {recorded['job_queue']}")
        return dict(recorded)
    staged = _stage(aws, s3, plan, image_uri, secrets, progress)
    # The role reads only the staged inputs' own prefixes, known now that they are hashed and uploaded.
    role_arn = iam_api.ensure_role(iam_api.client(aws), plan.role, ECS_TASKS, f"submitter: the jobs of {sub}",
                                   plan.tags, policy=job_role_policy(plan, staged))
    definition = batch_api.register_job_definition(batch, job_definition(plan, image_uri, role_arn))
    job = batch_api.submit_job(batch, submit_params(plan, definition, queue))
    runs = {r.run_id: (f"{job['jobId']}:{i}" if len(plan.runs) > 1 else job["jobId"])
            for i, r in enumerate(plan.runs)}
    record = {"job_id": job["jobId"], "job_arn": job["jobArn"], "job_queue": queue, "job_definition": definition,
              "job_role": role_arn, "array_size": len(plan.runs) if len(plan.runs) > 1 else None, "runs": runs}
    s3.put_json(layout.batch_record(sub), record)
    staging.mark_queued(s3, plan, contract.iso())
    kind = f"array job of {len(plan.runs)}" if len(plan.runs) > 1 else "job"
    progress.done(f"submitted AWS Batch {kind} {job['jobId']} to queue {queue}")
    return record


def _stage(aws: Aws, s3: S3, plan: Plan, image_uri: str, secrets: dict[str, str],
           progress: Progress) -> list[str]:
    """The documents of docs/runtime-contract.md that the wrapper reads, without a queue (Batch is the queue);
    plus the runs by array index (Layout.batch_runs). Returns the staged inputs' URIs."""
    inputs = staging.stage_inputs(s3, plan, progress)
    staging.put_secrets(aws, plan, secrets)
    s3.put_json(plan.layout.submission_doc(plan.submission_id),
                staging.submission_doc(plan, image_uri, inputs, secrets, backend="batch", grace_seconds=GRACE_S))
    s3.put_json(plan.layout.batch_runs(plan.submission_id), staging.messages(plan))
    staging.put_runtime(s3, plan)
    staging.stage_runs(s3, plan, image_uri, contract.iso(), inputs, backend="batch")
    progress.done(f"staged {len(plan.runs)} run(s) for AWS Batch")
    return [i.uri for i in inputs]


def is_batch(s3: S3, layout: contract.Layout, submission: str) -> bool:
    return s3.exists(layout.batch_record(submission))


def cancel(aws: Aws, s3: S3, layout: contract.Layout, submission: str, runs: list[str] | None = None,
           reason: str = "cancelled with submitter cancel", say: Callable[[str], None] | None = None) -> list[str]:
    """Terminate a Batch submission's job (all its array children), or only the children of `runs`; returns
    the job ids terminated, [] when the submission is not on Batch. Running containers get SIGTERM; the
    wrapper sees the cancel object written first, uploads what the run made and marks it cancelled. Runs that
    never started are marked cancelled here, since no wrapper will.

    The record's run ids must be `submission`'s own and its job ids must name a job tagged with it and named
    after it (ownership.batch_jobs): anything else is said and left alone."""
    record = s3.get_json(layout.batch_record(submission))
    if not record:
        return []
    recorded = {str(r): str(j) for r, j in dict(record.get("runs") or {}).items()
                if contract.is_run_of(str(r), submission)}
    targets = list(recorded) if runs is None else [r for r in runs if r in recorded]
    if runs is None:
        s3.put_json(layout.submission_cancel(submission), {"reason": reason})
        job_ids = [str(record["job_id"])]
    else:
        for run_id in targets:
            s3.put_json(layout.run_cancel(run_id), {"reason": reason})
        job_ids = [recorded[r] for r in targets]
    batch = batch_api.client(aws)
    job_ids, refused = ownership.batch_jobs(batch, job_ids, submission)
    for line in refused:
        (say or (lambda _t: None))(f"not terminated: {line}")
    for job_id in job_ids:
        batch_api.terminate_job(batch, job_id, reason)
    now = contract.iso()
    for run_id in targets:
        status = contract.Status.from_json(s3.get_json(layout.status(run_id)), run_id)
        if status.state == contract.QUEUED and not status.started_at:
            ended = status.evolve(contract.CANCELLED, reason="cancelled before it started", ended_at=now)
            index.put_status(s3, layout, ended, previous=status)
    return job_ids
