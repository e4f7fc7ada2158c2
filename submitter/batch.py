"""The AWS Batch backend (docs/batch.md): the spot compute environments and job queues (`init --batch`), a job
definition per submission, one job per submission (an array job for a sweep), and cancelling them.

The runs leave the same S3 layout and status.json as on the worker pool (docs/runtime-contract.md), written by
the in-container wrapper (submitter/boot/wrapper.py), so status, logs, results and cost read them unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

from submitter.aws import batch as batch_api
from submitter.aws.errors import translate
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.errors import SettingsError
from submitter.plan import Plan, _is_gpu
from submitter.progress import Progress
from submitter.settings import Settings

COMPUTE_ENVIRONMENT = "submitter-spot"
GPU_COMPUTE_ENVIRONMENT = "submitter-spot-gpu"
JOB_QUEUE = "submitter"
GPU_JOB_QUEUE = "submitter-gpu"
INSTANCE_ROLE = "submitter-batch-instance"
SECURITY_GROUP = "submitter-batch"
CPU_INSTANCE_TYPES = ["optimal"]  # Batch's current C/M/R families, sized to the queued jobs
GPU_INSTANCE_TYPES = ["g4dn", "g5", "g6"]  # families: Batch picks the size that fits the job
ALLOCATION = "SPOT_PRICE_CAPACITY_OPTIMIZED"
MAX_ATTEMPTS = 10  # AWS Batch's limit for retryStrategy.attempts
RETRY_EXIT_CODE = 75  # the wrapper asks Batch for another attempt (an interruption or an on_failure re-run)
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

# Runs in the user's image: fetch the wrapper (and the agent, whose pure helpers it uses) with boto3, else the
# AWS CLI, then become the wrapper. Batch has no entryPoint override, so the image must not set ENTRYPOINT
# (or its entrypoint must `exec "$@"`).
BOOTSTRAP = """\
set -u
d=$(mktemp -d)
base="$SUBMITTER_PREFIX/submissions/$SUBMITTER_SUBMISSION_ID"
if python3 -c 'import boto3' 2>/dev/null; then
  python3 -c 'import boto3, os, sys
s3 = boto3.client("s3")
for f in ("agent.py", "wrapper.py"):
    s3.download_file(os.environ["SUBMITTER_BUCKET"], sys.argv[1] + "/" + f, sys.argv[2] + "/" + f)' "$base" "$d" \\
    || { echo "submitter: could not fetch the wrapper from S3 with boto3"; exit 64; }
elif command -v aws >/dev/null 2>&1; then
  for f in agent.py wrapper.py; do
    aws s3 cp --only-show-errors "s3://$SUBMITTER_BUCKET/$base/$f" "$d/$f" \\
      || { echo "submitter: could not fetch the wrapper from S3 with the AWS CLI"; exit 64; }
  done
else
  echo "submitter: the image needs python3 with boto3, or the AWS CLI, for the batch backend (docs/batch.md)"
  exit 64
fi
exec python3 "$d/wrapper.py"
"""


# ---------------------------------------------------------------------------------------------- pure parts


def instance_size(instance_type: str) -> tuple[int, int, int]:
    """(vCPUs, memory MiB, GPUs) of a type: from the table, else from its name (large = 2 vCPUs, xlarge = 4,
    Nxlarge = 4N; 2 GiB per vCPU, the leanest current ratio; one GPU for a GPU family)."""
    if instance_type in INSTANCE_TABLE:
        return INSTANCE_TABLE[instance_type]
    size = instance_type.split(".", 1)[1] if "." in instance_type else "large"
    match = re.fullmatch(r"(\d*)xlarge", size)
    vcpus = 4 * int(match.group(1) or 1) if match else 2
    return vcpus, vcpus * 2048, 1 if _is_gpu(instance_type) else 0


def uses_gpu(plan: Plan) -> bool:
    resources_ = plan.loaded.spec.resources
    return resources_.gpus != 0 and any(_is_gpu(t) for t in resources_.instance_types)


def resource_requirements(plan: Plan) -> list[dict[str, str]]:
    """What one run asks of Batch: the smallest of the spec's instance types, so any of them can take it."""
    spec = plan.loaded.spec
    sizes = [instance_size(t) for t in spec.resources.instance_types]
    vcpus = min(s[0] for s in sizes)
    memory = int(math.floor(min(s[1] for s in sizes) * MEMORY_SHARE))
    out = [{"type": "VCPU", "value": str(vcpus)}, {"type": "MEMORY", "value": str(memory)}]
    if uses_gpu(plan):
        gpu_sizes = [s[2] for t, s in zip(spec.resources.instance_types, sizes, strict=True) if _is_gpu(t)]
        gpus = spec.resources.gpus if isinstance(spec.resources.gpus, int) else min(gpu_sizes)
        out.append({"type": "GPU", "value": str(max(1, gpus))})
    return out


def attempts(plan: Plan) -> int:
    retries = plan.loaded.spec.retries
    return max(1, min(MAX_ATTEMPTS, 1 + retries.on_interruption + retries.on_failure))


def retry_strategy(plan: Plan) -> dict[str, Any]:
    """Retry a spot reclaim (Batch reports 'Host EC2 (instance i-...) terminated.') and the wrapper's own
    request for another attempt; anything else ends the job. The wrapper counts interruptions and failures in
    status.json against the spec's retries, so the run gives up where it would on the worker pool."""
    return {
        "attempts": attempts(plan),
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onExitCode": str(RETRY_EXIT_CODE), "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }


def job_role_policy(plan: Plan) -> dict[str, Any]:
    """The pool's instance policy (plan.instance_policy) less what only a worker host does: the queue, the
    group, the image pull (on Batch the ECS instance role pulls)."""
    host_only = {"OwnQueue", "LeaveOwnGroup", "EcrLogin", "PullTrainingImage"}
    statements = [s for s in plan.iam_policy["Statement"] if s.get("Sid") not in host_only]
    return {"Version": plan.iam_policy.get("Version", "2012-10-17"), "Statement": statements}


def job_definition_name(plan: Plan) -> str:
    return f"submitter-{plan.job}"


def job_definition(plan: Plan, image_uri: str, job_role_arn: str) -> dict[str, Any]:
    """RegisterJobDefinition parameters for a submission."""
    spec = plan.loaded.spec
    environment = {
        "SUBMITTER_BUCKET": plan.bucket or "UNSET-BUCKET",
        "SUBMITTER_PREFIX": plan.prefix,
        "SUBMITTER_SUBMISSION_ID": plan.submission_id,
        "SUBMITTER_BATCH_ATTEMPTS": str(attempts(plan)),
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
            "command": ["/bin/sh", "-c", BOOTSTRAP],
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
            "tags": dict(TAGS),
        },
        "tags": dict(TAGS),
    }


# ---------------------------------------------------------------------------------------------- init --batch


def ensure_batch(aws: Aws, settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """The account's Batch resources, created when missing: a CPU and a GPU spot compute environment
    (price-capacity-optimized, 0..SUBMITTER_BATCH_MAX_VCPUS vCPUs) and a job queue on each. Idempotent."""
    from submitter.aws import ec2 as ec2_api

    iam = aws.client("iam")
    batch = aws.client("batch")
    ec2 = aws.client("ec2")
    service_role = batch_api.ensure_service_linked_role(iam)
    batch_api.ensure_role(iam, INSTANCE_ROLE, "ec2.amazonaws.com", "submitter: AWS Batch container hosts", TAGS,
                          managed=(batch_api.ECS_INSTANCE_POLICY,))
    profile = batch_api.ensure_instance_profile(iam, INSTANCE_ROLE, TAGS)
    subnets = ec2_api.default_subnets(ec2, None)
    group = ec2_api.ensure_security_group(ec2, SECURITY_GROUP, "submitter AWS Batch hosts: no inbound rules",
                                          subnets[0], TAGS)
    result: dict[str, Any] = {"service_role": service_role, "instance_profile": profile, "security_group": group,
                              "subnets": subnets, "compute_environments": {}, "job_queues": {}}
    for env_name, queue_name, types in ((COMPUTE_ENVIRONMENT, JOB_QUEUE, CPU_INSTANCE_TYPES),
                                        (GPU_COMPUTE_ENVIRONMENT, GPU_JOB_QUEUE, GPU_INSTANCE_TYPES)):
        found = batch_api.compute_environment(batch, env_name)
        if found is None:
            batch_api.create_compute_environment(batch, compute_environment_params(
                env_name, types, settings.batch_max_vcpus, subnets, group, profile, service_role))
            say(f"created compute environment {env_name} (spot, {', '.join(types)}, "
                f"0..{settings.batch_max_vcpus} vCPUs)")
        else:
            current = int(found.get("computeResources", {}).get("maxvCpus", 0))
            if current != settings.batch_max_vcpus:
                with translate("batch", "UpdateComputeEnvironment"):
                    batch.update_compute_environment(computeEnvironment=env_name,
                                                     computeResources={"maxvCpus": settings.batch_max_vcpus})
                say(f"compute environment {env_name}: max vCPUs {current} -> {settings.batch_max_vcpus}")
            else:
                say(f"found compute environment {env_name}")
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


# ---------------------------------------------------------------------------------------------- submit


def queue_for(plan: Plan) -> str:
    return GPU_JOB_QUEUE if uses_gpu(plan) else JOB_QUEUE


def submit(aws: Aws, plan: Plan, image_uri: str, secrets: dict[str, str], progress: Progress) -> dict[str, Any]:
    """Stage the submission's documents, register its job definition and submit one job (an array job for a
    sweep). A retried submit with the same id submits nothing twice: submissions/S/batch.json records the job."""
    from submitter import stage as stage_mod

    assert plan.bucket
    batch = aws.client("batch")
    queue = queue_for(plan)
    if batch_api.job_queue(batch, queue) is None:
        raise SettingsError("resources.backend: batch", f"there is no AWS Batch job queue {queue!r}",
                            "run `submitter init --batch` once for this account and region")
    s3 = S3(aws.client("s3"), plan.bucket)
    base = f"{plan.prefix}/submissions/{plan.submission_id}"
    recorded = s3.get_json(f"{base}/batch.json")
    if recorded:
        progress.done(f"already submitted as AWS Batch job {recorded['job_id']} on {recorded['job_queue']}")
        return dict(recorded)
    _stage(aws, s3, plan, image_uri, secrets, progress)
    role_arn = batch_api.ensure_role(aws.client("iam"), plan.names.role, "ecs-tasks.amazonaws.com",
                                     f"submitter: the jobs of {plan.submission_id}", plan.tags,
                                     policy=job_role_policy(plan))
    definition = batch_api.register_job_definition(batch, job_definition(plan, image_uri, role_arn))
    job = batch_api.submit_job(batch, submit_params(plan, definition, queue))
    runs = {r.run_id: (f"{job['jobId']}:{i}" if len(plan.runs) > 1 else job["jobId"])
            for i, r in enumerate(plan.runs)}
    record = {"job_id": job["jobId"], "job_arn": job["jobArn"], "job_queue": queue, "job_definition": definition,
              "job_role": role_arn, "array_size": len(plan.runs) if len(plan.runs) > 1 else None, "runs": runs}
    s3.put_json(f"{base}/batch.json", record)
    s3.put_json(f"{base}/queued", {"runs": [r.run_id for r in plan.runs], "at": stage_mod.now_iso()})
    kind = f"array job of {len(plan.runs)}" if len(plan.runs) > 1 else "job"
    progress.done(f"submitted AWS Batch {kind} {job['jobId']} to queue {queue}")
    return record


def _stage(aws: Aws, s3: S3, plan: Plan, image_uri: str, secrets: dict[str, str], progress: Progress) -> None:
    """The documents of docs/runtime-contract.md that the wrapper reads, as stage.stage writes them for the
    pool, without its SQS queue (Batch is the queue); plus runs.json, the runs by array index."""
    from submitter import stage as stage_mod

    spec = plan.loaded.spec
    base = f"{plan.prefix}/submissions/{plan.submission_id}"
    inputs = [stage_mod._stage_input(s3, plan, i.source, i.target, progress) for i in spec.inputs]
    if secrets:
        stage_mod._put_secrets(aws, plan, secrets)
    s3.put_json(f"{base}/submission.json", {
        "version": 1, "backend": "batch", "submission_id": plan.submission_id, "job": plan.job,
        "region": plan.region, "image": image_uri, "registry": image_uri.split("/", 1)[0],
        "command": plan.command, "volume_mount": spec.volume_mount, "outputs": spec.outputs,
        "checkpoints": spec.checkpoints, "gpus": spec.resources.gpus, "max_runtime": spec.limits.max_runtime,
        "max_cost": spec.limits.max_cost, "retries": spec.retries.model_dump(),
        "inputs": [i.__dict__ for i in inputs],
        "secrets": {"names": sorted(secrets), "ssm_prefix": f"/submitter/{plan.submission_id}/"},
        "grace_seconds": 20,  # Batch sends SIGKILL 30 s after SIGTERM
    })
    s3.put_json(f"{base}/runs.json", [{"run_id": r.run_id, "index": r.index, "env": r.env} for r in plan.runs])
    for name in ("agent.py", "wrapper.py"):
        s3.put_bytes(f"{base}/{name}", resources.files("submitter.boot").joinpath(name).read_bytes(),
                     "text/x-python")
    git = stage_mod._git_state(plan.loaded.path.parent)
    created = stage_mod.now_iso()
    for run in plan.runs:
        run_base = f"{plan.prefix}/runs/{run.run_id}"
        s3.put_json(f"{run_base}/spec.json", {
            "run_id": run.run_id, "submission_id": plan.submission_id, "job": plan.job, "index": run.index,
            "sweep": run.sweep, "env": run.env, "command": plan.command, "image": image_uri,
            "spec_file": plan.spec_file, "spec": spec.model_dump(mode="json"), "git": git, "region": plan.region,
            "instance_types": spec.resources.instance_types, "max_price": spec.resources.max_price,
            "backend": "batch", "created_at": created,
        })
        if not s3.exists(f"{run_base}/status.json"):
            s3.put_json(f"{run_base}/status.json", {
                "run_id": run.run_id, "submission_id": plan.submission_id, "job": plan.job, "state": "queued",
                "attempt": 0, "interruptions": 0, "failures": 0, "created_at": created,
            })
    progress.done(f"staged {len(plan.runs)} run(s) for AWS Batch")


# ---------------------------------------------------------------------------------------------- cancel


def cancel(aws: Aws, submission_id: str, *, bucket: str | None = None, prefix: str = "submitter",
           runs: list[str] | None = None, reason: str = "cancelled with submitter cancel") -> list[str]:
    """Terminate a Batch submission's job (all its array children), or only the children of `runs`; returns
    the job ids terminated, [] when the submission is not on Batch. Running containers get SIGTERM; the
    wrapper sees the cancel object written first, uploads what the run made and marks it cancelled. Runs that
    never started are marked cancelled here, since no wrapper will."""
    from datetime import datetime, timezone

    bucket = bucket or aws.bucket
    if not bucket:
        raise SettingsError("SUBMITTER_BUCKET", "no bucket is set", "set SUBMITTER_BUCKET, or run `submitter init`")
    s3 = S3(aws.client("s3"), bucket)
    base = f"{prefix}/submissions/{submission_id}"
    record = s3.get_json(f"{base}/batch.json")
    if not record:
        return []
    targets = list(record["runs"]) if runs is None else [r for r in runs if r in record["runs"]]
    if runs is None:
        s3.put_json(f"{base}/cancel", {"reason": reason})
        job_ids = [str(record["job_id"])]
    else:
        for run_id in targets:
            s3.put_json(f"{prefix}/runs/{run_id}/cancel", {"reason": reason})
        job_ids = [str(record["runs"][r]) for r in targets]
    batch = aws.client("batch")
    for job_id in job_ids:
        batch_api.terminate_job(batch, job_id, reason)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for run_id in targets:
        key = f"{prefix}/runs/{run_id}/status.json"
        status = s3.get_json(key) or {}
        if status.get("state") == "queued" and not status.get("started_at"):
            s3.put_json(key, {**status, "state": "cancelled", "reason": "cancelled before it started",
                              "ended_at": now})
    return job_ids
