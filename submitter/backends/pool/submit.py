"""Submitting to the pool: the shared staging, the pool's submission document and runtime, then one queue
message per run (once per submission id), then the workers."""

from __future__ import annotations

import dataclasses

from submitter import contract
from submitter.aws import sqs as sqs_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends import staging
from submitter.backends.pool import capacity, resources
from submitter.backends.pool.resources import PoolPlan
from submitter.plan import Plan
from submitter.progress import Progress


def submit(aws: Aws, plan: Plan, pool: PoolPlan, image_uri: str, secrets: dict[str, str],
           progress: Progress) -> str:
    """Upload everything the workers need, queue the runs and launch the workers; returns the queue URL."""
    assert plan.bucket
    s3 = S3.connect(aws, plan.bucket)
    inputs = staging.stage_inputs(s3, plan, progress)
    # Only now are the inputs' digests known: the instance role reads those inputs/DIGEST/ and no other.
    pool = dataclasses.replace(pool, iam_policy=resources.instance_policy(plan, pool.names, [i.uri for i in inputs]))
    staging.put_secrets(aws, plan, secrets)
    s3.put_json(plan.layout.submission_doc(plan.submission_id), staging.submission_doc(
        plan, image_uri, inputs, secrets,
        queue_name=pool.names.queue,
        grace_seconds=int(plan.spec.limits.stop_grace),
        deadman_minutes=contract.deadman_minutes(plan.spec.limits.max_runtime),
        keep_on_failure=plan.spec.limits.keep_on_failure,  # runtime/keep.py: a failed run's instance stays this long
        # The agent serves this role's credentials to the container; absent: the container gets none.
        job_role_arn=pool.job_role["Arn"] if pool.job_role else None,
    ))
    staging.put_runtime(s3, plan)
    created = contract.iso()
    staging.stage_runs(s3, plan, image_uri, created, inputs)
    sqs = sqs_api.client(aws)
    queue = pool.queue
    url, _ = sqs_api.ensure_queue(sqs, queue["QueueName"], queue["DeadLetterQueueName"], queue["VisibilityTimeout"],
                                  queue["MessageRetentionPeriod"], queue["maxReceiveCount"], plan.tags)
    if not staging.is_queued(s3, plan):  # runs are queued once per submission id, however often submit retries
        sqs_api.send_runs(sqs, url, staging.messages(plan))
        staging.mark_queued(s3, plan, created)
    progress.done(f"staged {len(plan.runs)} run(s) and queued them on {queue['QueueName']}")
    capacity.launch(aws, plan, pool, progress)
    return url
