"""`submitter init --batch`: the account's AWS Batch resources, shared by every Batch submission: a CPU and a
GPU spot compute environment and a job queue on each, with the container hosts' role and security group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from submitter.aws import batch as batch_api
from submitter.aws import ec2 as ec2_api
from submitter.aws import iam as iam_api
from submitter.aws.session import Aws
from submitter.backends.batch.job import (
    COMPUTE_ENVIRONMENT,
    CPU_INSTANCE_TYPES,
    GPU_COMPUTE_ENVIRONMENT,
    GPU_INSTANCE_TYPES,
    GPU_JOB_QUEUE,
    INSTANCE_ROLE,
    JOB_QUEUE,
    LAUNCH_TEMPLATE,
    SECURITY_GROUP,
    TAGS,
    compute_environment_params,
    host_launch_template,
)
from submitter.settings import Settings


def ensure_batch(aws: Aws, settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """The account's Batch resources, created when missing: a CPU and a GPU spot compute environment
    (price-capacity-optimized, 0..SUBMITTER_BATCH_MAX_VCPUS vCPUs) and a job queue on each. Idempotent."""
    iam = iam_api.client(aws)
    batch = batch_api.client(aws)
    ec2 = ec2_api.client(aws)
    service_role = iam_api.ensure_service_linked_role(iam)
    iam_api.ensure_role(iam, INSTANCE_ROLE, iam_api.EC2, "submitter: AWS Batch container hosts", TAGS,
                        managed=(batch_api.ECS_INSTANCE_POLICY,))
    profile = iam_api.ensure_instance_profile(iam, INSTANCE_ROLE, TAGS)
    subnets = ec2_api.default_subnets(ec2, None)
    group = ec2_api.ensure_security_group(ec2, SECURITY_GROUP, "submitter AWS Batch hosts: no inbound rules",
                                          subnets[0], TAGS)
    template = ec2_api.ensure_launch_template(ec2, LAUNCH_TEMPLATE, host_launch_template(), TAGS)
    result: dict[str, Any] = {"service_role": service_role, "instance_profile": profile, "security_group": group,
                              "subnets": subnets, "launch_template": template, "compute_environments": {},
                              "job_queues": {}}
    for env_name, queue_name, types in ((COMPUTE_ENVIRONMENT, JOB_QUEUE, CPU_INSTANCE_TYPES),
                                        (GPU_COMPUTE_ENVIRONMENT, GPU_JOB_QUEUE, GPU_INSTANCE_TYPES)):
        found = batch_api.compute_environment(batch, env_name)
        if found is None:
            batch_api.create_compute_environment(batch, compute_environment_params(
                env_name, types, settings.batch_max_vcpus, subnets, group, profile, service_role))
            say(f"created compute environment {env_name} (spot, {', '.join(types)}, "
                f"0..{settings.batch_max_vcpus} vCPUs)")
        else:
            say(_bring_up_to_date(batch, found, settings.batch_max_vcpus))
        env = batch_api.wait_valid(lambda n: batch_api.compute_environment(batch, n), env_name,
                                   "compute environment")
        result["compute_environments"][env_name] = env["computeEnvironmentArn"]
        if batch_api.job_queue(batch, queue_name) is None:
            batch_api.create_job_queue(batch, {
                "jobQueueName": queue_name, "state": "ENABLED", "priority": 1,
                "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}],
                "tags": dict(TAGS),
            })
            say(f"created job queue {queue_name}")
        queue = batch_api.wait_valid(lambda n: batch_api.job_queue(batch, n), queue_name, "job queue")
        result["job_queues"][queue_name] = queue["jobQueueArn"]
    return result


def _bring_up_to_date(batch: Any, found: dict[str, Any], max_vcpus: int) -> str:
    """Update an existing environment's vCPU cap and host launch template (one made by an earlier version has
    none: its hosts allowed IMDSv1); says what changed."""
    name = found["computeEnvironmentName"]
    resources = found.get("computeResources", {})
    changes: dict[str, Any] = {}
    said = []
    current = int(resources.get("maxvCpus", 0))
    if current != max_vcpus:
        changes["maxvCpus"] = max_vcpus
        said.append(f"max vCPUs {current} -> {max_vcpus}")
    wanted = compute_environment_params(name, [], max_vcpus, [], "", "", "")["computeResources"]["launchTemplate"]
    if (resources.get("launchTemplate") or {}).get("launchTemplateName") != wanted["launchTemplateName"]:
        changes["launchTemplate"] = wanted
        said.append(f"hosts now launch from {wanted['launchTemplateName']} (IMDSv2, encrypted root volume)")
    if not changes:
        return f"found compute environment {name}"
    batch_api.update_compute_resources(batch, name, changes)
    return f"compute environment {name}: " + "; ".join(said)
