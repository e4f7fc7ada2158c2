"""AWS Batch adapter: the compute environments, job queues, job definitions and jobs. The roles Batch needs are
made by aws/iam.py."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from submitter.aws.errors import translate
from submitter.errors import AwsError

ECS_INSTANCE_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
WAIT_S = 300

if TYPE_CHECKING:
    from submitter.aws.session import Aws


def client(aws: Aws) -> Any:
    return aws.client("batch")


# ---------------------------------------------------------------------------------------------- Batch


def compute_environment(batch: Any, name: str) -> dict[str, Any] | None:
    with translate("batch", "DescribeComputeEnvironments"):
        found = batch.describe_compute_environments(computeEnvironments=[name])["computeEnvironments"]
    return dict(found[0]) if found else None


def create_compute_environment(batch: Any, params: dict[str, Any]) -> str:
    with translate("batch", "CreateComputeEnvironment"):
        return str(batch.create_compute_environment(**params)["computeEnvironmentArn"])


def job_queue(batch: Any, name: str) -> dict[str, Any] | None:
    with translate("batch", "DescribeJobQueues"):
        found = batch.describe_job_queues(jobQueues=[name])["jobQueues"]
    return dict(found[0]) if found else None


def create_job_queue(batch: Any, params: dict[str, Any]) -> str:
    with translate("batch", "CreateJobQueue"):
        return str(batch.create_job_queue(**params)["jobQueueArn"])


def update_compute_resources(batch: Any, name: str, resources: dict[str, Any]) -> None:
    with translate("batch", "UpdateComputeEnvironment"):
        batch.update_compute_environment(computeEnvironment=name, computeResources=resources)


def wait_valid(describe: Any, name: str, what: str, wait_s: float = WAIT_S) -> dict[str, Any]:
    """Poll `describe(name)` until its status is VALID (a new environment is CREATING for a while)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = describe(name)
        status = (found or {}).get("status")
        if status == "VALID":
            return dict(found)
        if status == "INVALID" or time.monotonic() >= deadline:
            reason = (found or {}).get("statusReason", f"still {status} after {int(wait_s)} s")
            raise AwsError("batch", f"Describe {what}", str(status), f"{what} {name}: {reason}",
                           "fix the reason above (often IAM or subnets), delete it in the console, and run "
                           "`submitter init --batch` again")
        time.sleep(5)


def register_job_definition(batch: Any, params: dict[str, Any]) -> str:
    """A new revision of the job definition; returns its ARN (name:revision)."""
    with translate("batch", "RegisterJobDefinition"):
        return str(batch.register_job_definition(**params)["jobDefinitionArn"])


def submit_job(batch: Any, params: dict[str, Any]) -> dict[str, str]:
    with translate("batch", "SubmitJob"):
        answer = batch.submit_job(**params)
    return {"jobId": str(answer["jobId"]), "jobArn": str(answer.get("jobArn", "")),
            "jobName": str(answer["jobName"])}


def terminate_job(batch: Any, job_id: str, reason: str) -> None:
    """Stop a job (an array job: all its children) whatever its state; running containers get SIGTERM."""
    with translate("batch", "TerminateJob"):
        batch.terminate_job(jobId=job_id, reason=reason)


def describe_jobs(batch: Any, job_ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with translate("batch", "DescribeJobs"):
        for start in range(0, len(job_ids), 100):  # DescribeJobs takes at most 100 ids
            found += batch.describe_jobs(jobs=job_ids[start:start + 100])["jobs"]
    return found
