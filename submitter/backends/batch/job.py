"""The Batch backend's part of a plan, pure: the job definition (command, resources, retries, timeout) and the
job's submit parameters, and the account-wide compute environments' parameters (`init --batch`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from submitter import contract
from submitter.backends import job_role, policy
from submitter.plan import Plan, is_gpu, uses_gpu
from submitter.runtime import artefact

COMPUTE_ENVIRONMENT = "submitter-spot"
GPU_COMPUTE_ENVIRONMENT = "submitter-spot-gpu"
JOB_QUEUE = "submitter"
GPU_JOB_QUEUE = "submitter-gpu"
INSTANCE_ROLE = "submitter-batch-instance"
SECURITY_GROUP = "submitter-batch"
LAUNCH_TEMPLATE = "submitter-batch-hosts"
CPU_INSTANCE_TYPES = ["optimal"]  # Batch's current C/M/R families, sized to the queued jobs
GPU_INSTANCE_TYPES = ["g4dn", "g5", "g6"]  # families: Batch picks the size that fits the job
ALLOCATION = "SPOT_PRICE_CAPACITY_OPTIMIZED"
MAX_ATTEMPTS = 10  # AWS Batch's limit for retryStrategy.attempts
RETRY_EXIT_CODE = contract.EXIT_RETRY  # the wrapper asks Batch for another attempt (an interruption or a re-run)
STOP_MARGIN_S = 300  # the wrapper stops the command at max_runtime; Batch's own timeout leaves time to upload
MEMORY_SHARE = 0.9  # of an instance's memory a job may ask for: the ECS agent and the OS keep the rest
TAGS = {"submitter:managed": "batch"}
DATA_VOLUME = "data"

# vCPUs, memory MiB, GPUs. Types not listed are sized from their name (see `instance_size`).
INSTANCE_TABLE: dict[str, tuple[int, int, int]] = {
    "t3.medium": (2, 4096, 0), "t3.large": (2, 8192, 0), "t3.xlarge": (4, 16384, 0),
    "c5.large": (2, 4096, 0), "c5.xlarge": (4, 8192, 0), "c5.2xlarge": (8, 16384, 0), "c5.4xlarge": (16, 32768, 0),
    "c6i.large": (2, 4096, 0), "c6i.xlarge": (4, 8192, 0), "c6i.2xlarge": (8, 16384, 0),
    "m5.large": (2, 8192, 0), "m5.xlarge": (4, 16384, 0), "m5.2xlarge": (8, 32768, 0), "m5.4xlarge": (16, 65536, 0),
    "m6i.large": (2, 8192, 0), "m6i.xlarge": (4, 16384, 0), "m6i.2xlarge": (8, 32768, 0),
    "r5.large": (2, 16384, 0), "r5.xlarge": (4, 32768, 0), "r5.2xlarge": (8, 65536, 0),
    "g4dn.xlarge": (4, 16384, 1), "g4dn.2xlarge": (8, 32768, 1), "g4dn.4xlarge": (16, 65536, 1),
    "g4dn.12xlarge": (48, 196608, 4),
    "g5.xlarge": (4, 16384, 1), "g5.2xlarge": (8, 32768, 1), "g5.4xlarge": (16, 65536, 1),
    "g5.12xlarge": (48, 196608, 4),
    "g6.xlarge": (4, 16384, 1), "g6.2xlarge": (8, 32768, 1),
    "p3.2xlarge": (8, 62464, 1), "p3.8xlarge": (32, 249856, 4),
}

def instance_size(instance_type: str) -> tuple[int, int, int]:
    """(vCPUs, memory MiB, GPUs) of a type: from the table, else from its name (large = 2 vCPUs, xlarge = 4,
    Nxlarge = 4N; 2 GiB per vCPU, the leanest current ratio; one GPU for a GPU family)."""
    if instance_type in INSTANCE_TABLE:
        return INSTANCE_TABLE[instance_type]
    size = instance_type.split(".", 1)[1] if "." in instance_type else "large"
    match = re.fullmatch(r"(\d*)xlarge", size)
    vcpus = 4 * int(match.group(1) or 1) if match else 2
    return vcpus, vcpus * 2048, 1 if is_gpu(instance_type) else 0


def resource_requirements(plan: Plan) -> list[dict[str, str]]:
    """What one run asks of Batch: the smallest of the spec's instance types, so any of them can take it."""
    spec = plan.spec
    sizes = [instance_size(t) for t in spec.resources.instance_types]
    vcpus = min(s[0] for s in sizes)
    memory = int(math.floor(min(s[1] for s in sizes) * MEMORY_SHARE))
    out = [{"type": "VCPU", "value": str(vcpus)}, {"type": "MEMORY", "value": str(memory)}]
    if uses_gpu(plan.spec):
        gpu_sizes = [s[2] for t, s in zip(spec.resources.instance_types, sizes, strict=True) if is_gpu(t)]
        gpus = spec.resources.gpus if isinstance(spec.resources.gpus, int) else min(gpu_sizes)
        out.append({"type": "GPU", "value": str(max(1, gpus))})
    return out


def attempts(plan: Plan) -> int:
    retries = plan.spec.retries
    return max(1, min(MAX_ATTEMPTS, 1 + retries.on_interruption + retries.on_failure))


def retry_strategy(plan: Plan) -> dict[str, Any]:
    """Retry a spot reclaim (Batch reports 'Host EC2 (instance i-...) terminated.') and the wrapper's own
    request for another attempt; anything else ends the job. The wrapper counts interruptions and failures in
    the run status against the spec's retries, so the run gives up where it would on the worker pool."""
    return {
        "attempts": attempts(plan),
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onExitCode": str(RETRY_EXIT_CODE), "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }


def job_role_policy(plan: Plan, inputs: Sequence[str] | None = None) -> dict[str, Any]:
    """What a run may reach (backends/policy.py), nothing a host does: on Batch the ECS instance role pulls the
    image, and there is no queue or group of ours. `inputs`: the staged inputs' URIs (None: before staging).
    Plus the spec's `permissions`: on Batch the command runs in the wrapper's container under this one role
    (docs/decisions.md: a separate job role there needs a second container), so it gets them here."""
    declared = job_role.permissions_policy(plan)["Statement"] if job_role.wanted(plan) else []
    return policy.document(policy.run_statements(plan, inputs) + declared)


def job_definition_name(plan: Plan) -> str:
    return f"submitter-{plan.job}"


def job_definition(plan: Plan, image_uri: str, job_role_arn: str) -> dict[str, Any]:
    """RegisterJobDefinition parameters for a submission."""
    spec = plan.spec
    environment = {
        "SUBMITTER_BUCKET": plan.bucket_or_placeholder,
        "SUBMITTER_BUCKET_OWNER": plan.account if plan.account.isdigit() else "",  # the store names it to S3
        "SUBMITTER_PREFIX": plan.prefix,
        "SUBMITTER_SUBMISSION_ID": plan.submission_id,
        "SUBMITTER_BATCH_ATTEMPTS": str(attempts(plan)),
        artefact.RUNTIME_SHA256_ENV: artefact.sha256(),  # the command runs only the runtime staged with this plan
        "SUBMITTER_DATA_DIR": spec.volume_mount,
        "SUBMITTER_OUTPUT_DIR": spec.outputs,
        "AWS_REGION": plan.region,
        "AWS_DEFAULT_REGION": plan.region,
    }
    if spec.checkpoints:
        environment["SUBMITTER_CHECKPOINT_DIR"] = spec.checkpoints
    return {
        "jobDefinitionName": job_definition_name(plan),
        "type": "container",
        "platformCapabilities": ["EC2"],
        "containerProperties": {
            "image": image_uri,
            "command": artefact.batch_command(),
            "jobRoleArn": job_role_arn,
            "resourceRequirements": resource_requirements(plan),
            # No host path: docker makes a volume per container, so two jobs on one host never share data.
            "volumes": [{"name": DATA_VOLUME}],
            "mountPoints": [{"sourceVolume": DATA_VOLUME, "containerPath": spec.volume_mount, "readOnly": False}],
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
            "linuxParameters": {"initProcessEnabled": True},  # reaps the command's orphans; forwards SIGTERM
        },
        "retryStrategy": retry_strategy(plan),
        "timeout": {"attemptDurationSeconds": max(60, int(spec.limits.max_runtime) + STOP_MARGIN_S)},
        "propagateTags": True,
        "tags": {**plan.tags, **TAGS},
    }


def submit_params(plan: Plan, definition_arn: str, queue: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "jobName": plan.submission_id[:128],
        "jobQueue": queue,
        "jobDefinition": definition_arn,
        "tags": {**plan.tags, **TAGS},
        "propagateTags": True,
    }
    if len(plan.runs) > 1:  # an array job has 2..10000 children; one run is a plain job
        params["arrayProperties"] = {"size": len(plan.runs)}
    return params


def host_launch_template() -> dict[str, Any]:
    """What every Batch container host launches with: IMDSv2 only with a hop limit of 1 (a request forged
    through the job, e.g. SSRF, gets no token) and an encrypted root volume (the job's data lives on it).
    ECS-EC2 Batch jobs use host networking (Batch User Guide, "Networking modes for AWS Batch jobs"), so the
    hop limit does not keep a job's own code from IMDS: docs/batch.md says what that leaves open."""
    return {
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"},
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"Encrypted": True, "VolumeType": "gp3"}}],
    }


def compute_environment_params(name: str, instance_types: list[str], max_vcpus: int, subnets: list[str],
                               security_group: str, instance_profile: str, service_role: str) -> dict[str, Any]:
    return {
        "computeEnvironmentName": name,
        "type": "MANAGED",
        "state": "ENABLED",
        "serviceRole": service_role,
        "computeResources": {
            "type": "SPOT",
            "allocationStrategy": ALLOCATION,
            "minvCpus": 0,  # scales to zero: nothing bills while the queue is empty
            "desiredvCpus": 0,
            "maxvCpus": max_vcpus,
            "instanceTypes": instance_types,
            "subnets": subnets,
            "securityGroupIds": [security_group],
            "instanceRole": instance_profile,
            "launchTemplate": {"launchTemplateName": LAUNCH_TEMPLATE, "version": "$Latest"},
            "tags": dict(TAGS),
        },
        "tags": dict(TAGS),
    }
