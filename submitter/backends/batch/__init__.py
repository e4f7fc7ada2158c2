"""The AWS Batch backend (docs/batch.md): Batch's spot compute environments and job queues run the runs; the
in-container wrapper leaves the same S3 layout and run status as a pool worker, so tracking is unchanged."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from submitter import contract
from submitter.aws import iam as iam_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends import staging
from submitter.backends.base import Ledger, Orphan, Say, Scope
from submitter.backends.batch import job, submit
from submitter.plan import Plan, role_name
from submitter.progress import Progress


class BatchBackend:
    name = "batch"
    kinds: tuple[str, ...] = ()  # the job role is found with the pool's by its tag; the rest scales to zero

    def describe(self, plan: Plan) -> dict[str, Any]:
        return {"batch": {
            "job_queue": submit.queue_for(plan),
            "job_definition": job.job_definition(plan, "<image uri with digest>", f"<role {plan.role}>"),
            "submit_job": job.submit_params(plan, f"<{job.job_definition_name(plan)}:revision>",
                                            submit.queue_for(plan)),
        }, "iam_policy": job.job_role_policy(plan)}

    def summary(self, plan: Plan) -> list[str]:
        kind = f"an array job of {len(plan.runs)}" if len(plan.runs) > 1 else "one job"
        asks = ", ".join(f"{r['value']} {r['type']}" for r in job.resource_requirements(plan))
        return [f"AWS Batch: {kind} on queue {submit.queue_for(plan)}, each asking {asks}",
                f"retries: up to {job.attempts(plan)} attempts; job role: "
                f"{len(job.job_role_policy(plan)['Statement'])} scoped statements"]

    def submit(self, aws: Aws, plan: Plan, image_uri: str, secrets: dict[str, str], progress: Progress) -> None:
        submit.submit(aws, plan, image_uri, secrets, progress)

    def stranded(self, aws: Aws, s3: S3, layout: contract.Layout, submission: str,
                 states: list[contract.Status]) -> list[contract.Status]:
        return []  # Batch retries a lost host itself; a job it gives up on ends in its own status

    def stop(self, aws: Aws, s3: S3, layout: contract.Layout, scope: Scope, say: Say) -> None:
        jobs = submit.cancel(aws, s3, layout, scope.submission, runs=None if scope.whole else scope.run_ids, say=say)
        if jobs:
            say(f"{scope.submission}: terminated Batch job(s) {', '.join(jobs)}")

    def force_stop(self, aws: Aws, unconfirmed: list[contract.Status], say: Say) -> list[str]:
        return []  # the job is terminated already: Batch kills its container after the grace

    def clean_up(self, aws: Aws, submission: str) -> list[str]:
        """Batch scales its hosts down itself; only the job role and the secrets are the submission's own."""
        role = role_name(submission)
        removed = [f"role {role}"] if iam_api.delete_instance_role(iam_api.client(aws), role) else []
        return removed + staging.delete_secrets(aws, submission)

    def orphans(self, aws: Aws, ledger: Ledger, now: datetime) -> list[Orphan]:
        return []

    def remove(self, aws: Aws, orphans: list[Orphan], say: Say) -> list[Orphan]:
        return []
