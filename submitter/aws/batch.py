"""AWS Batch adapter: the compute environment, job queue, job definitions and jobs, plus the IAM roles Batch
needs (its service-linked role, the ECS instance role, a job role per submission)."""

from __future__ import annotations

import json
import time
from typing import Any

from submitter.aws.errors import translate
from submitter.errors import AwsError

ECS_INSTANCE_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
SERVICE = "batch.amazonaws.com"
INLINE_POLICY = "submitter-run"
WAIT_S = 300


def _trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# ---------------------------------------------------------------------------------------------- IAM


def ensure_service_linked_role(iam: Any) -> str:
    """The ARN of Batch's service-linked role, created when the account has none yet."""
    from botocore.exceptions import ClientError

    with translate("iam", "CreateServiceLinkedRole"):
        try:
            return str(iam.create_service_linked_role(AWSServiceName=SERVICE)["Role"]["Arn"])
        except ClientError as exc:
            # AWS says InvalidInput ("has been taken"); either way the role is there already.
            if _code(exc) not in ("InvalidInput", "EntityAlreadyExists"):
                raise
        for page in iam.get_paginator("list_roles").paginate(PathPrefix=f"/aws-service-role/{SERVICE}/"):
            for role in page["Roles"]:
                return str(role["Arn"])
    raise AwsError("iam", "ListRoles", "NoSuchEntity", f"no service-linked role for {SERVICE}",
                   f"create it once: aws iam create-service-linked-role --aws-service-name {SERVICE}")


def ensure_role(iam: Any, name: str, service: str, description: str, tags: dict[str, str],
                policy: dict[str, Any] | None = None, managed: tuple[str, ...] = ()) -> str:
    """Role `name` assumable by `service`, with an inline `policy` and `managed` policies; returns its ARN.
    Idempotent: an existing role gets the policy rewritten (a retried submit, a changed scope)."""
    from botocore.exceptions import ClientError

    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    with translate("iam", "CreateRole"):
        try:
            arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=_trust(service), Tags=tag_list,
                                  Description=description)["Role"]["Arn"]
        except ClientError as exc:
            if _code(exc) != "EntityAlreadyExists":
                raise
            arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    if policy is not None:
        with translate("iam", "PutRolePolicy"):
            iam.put_role_policy(RoleName=name, PolicyName=INLINE_POLICY, PolicyDocument=json.dumps(policy))
    for policy_arn in managed:
        with translate("iam", "AttachRolePolicy"):
            iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
    return str(arn)


def ensure_instance_profile(iam: Any, name: str, tags: dict[str, str]) -> str:
    """Instance profile `name` holding role `name`; returns the profile ARN."""
    from botocore.exceptions import ClientError

    with translate("iam", "CreateInstanceProfile"):
        try:
            iam.create_instance_profile(InstanceProfileName=name,
                                        Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        except ClientError as exc:
            if _code(exc) != "EntityAlreadyExists":
                raise
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        if not any(r["RoleName"] == name for r in profile.get("Roles", [])):
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return str(profile["Arn"])


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
