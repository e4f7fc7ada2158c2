"""Is a resource named by a document read back from S3 one that submitter made for that submission?

A run's status (its instance id) and a Batch record (its job ids) live under keys a job may have written; a
forged one must not make `cancel` terminate, or `ssh`/`notebook` open port 22 on, something else in the account.
So an id read back is described first and acted on only when it carries `submitter:submission` = the submission
that the run id itself names (contract.submission_of), never the submission a document claims.
"""

from __future__ import annotations

from typing import Any

from submitter import contract
from submitter.aws import batch as batch_api
from submitter.aws import ec2 as ec2_api
from submitter.errors import RemoteError, UsageError

TAG = contract.TAG_SUBMISSION


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    """EC2-style `Tags: [{Key, Value}]`, or Batch-style `tags: {k: v}`, as one dict."""
    if isinstance(resource.get("tags"), dict):
        return {str(k): str(v) for k, v in resource["tags"].items()}
    return {str(t["Key"]): str(t["Value"]) for t in resource.get("Tags") or []}


def submission_of_run(run_id: str) -> str:
    """The run id's own submission; an id of another shape is refused (it could be a path, a glob, anything)."""
    submission = contract.submission_of(run_id)
    if submission is None:
        raise UsageError(f"run {run_id!r}", "is not a run id (NAME-YYYYmmdd-HHMMSS-TOKEN[-INDEX])",
                         "use a run id as `submitter status --all` lists it")
    return submission


def instance(ec2: Any, instance_id: str, submission: str, run_id: str) -> dict[str, Any] | None:
    """The instance `instance_id` when it is `submission`'s own; None when EC2 no longer knows it.

    RemoteError (nothing acted on) when it exists but is not tagged with that submission: the status document
    that named it was not written by that submission's worker."""
    found = ec2_api.instance(ec2, instance_id)
    if found is None:
        return None
    owner = tags_of(found).get(TAG)
    if owner != submission:
        why = f"is tagged {TAG}={owner}" if owner else f"has no {TAG} tag: submitter never launched it"
        raise RemoteError(
            f"instance {instance_id} (named by the status of run {run_id})",
            f"{why}, not {submission}; it is left alone",
            f"the run's status document may have been forged by its job; see `submitter status {run_id}` and "
            f"the instance in the EC2 console")
    return found


def batch_jobs(batch: Any, job_ids: list[str], submission: str) -> tuple[list[str], list[str]]:
    """(job ids that are `submission`'s own, refusals): a job is ours when its tags name the submission and its
    name is the submission id (backends/batch/job.py). An array child `ID:N` is judged by its parent ID."""
    parents = sorted({j.split(":", 1)[0] for j in job_ids})
    described = {str(j["jobId"]): j for j in batch_api.describe_jobs(batch, parents)} if parents else {}
    ours: list[str] = []
    refused: list[str] = []
    for job_id in job_ids:
        job = described.get(job_id.split(":", 1)[0])
        if job is None:
            refused.append(f"Batch job {job_id}: AWS Batch does not know it; nothing terminated")
            continue
        owner = tags_of(job).get(TAG)
        if owner != submission or str(job.get("jobName")) != submission[:128]:
            refused.append(f"Batch job {job_id} (named {job.get('jobName')!r}, {TAG}={owner}): not a job of "
                           f"{submission}; the batch record may have been forged; it is left alone")
            continue
        ours.append(job_id)
    return ours, refused
