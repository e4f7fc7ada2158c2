"""The worker pool's part of a plan, pure: resource names, the boot script, the instance role's policy, the
launch template, the Auto Scaling group, the security group and the queue. `--dry-run` shows them."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from submitter import contract
from submitter.backends import job_role, policy
from submitter.plan import Placement, Plan, fit, role_name, uses_gpu

DATA_DEVICE = contract.DATA_DEVICES[0]
AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
SPOT_ALLOCATION = "price-capacity-optimized"  # when the plan chose none: cheap pools least likely to be reclaimed
QUEUE_RETENTION_S = 14 * 86400


@dataclass(frozen=True)
class Names:
    """Every resource name of one submission's pool, derived from its id."""

    queue: str
    dead_letter_queue: str
    launch_template: str
    group: str
    security_group: str
    role: str
    instance_profile: str

    @classmethod
    def of(cls, submission: str) -> Names:
        base = f"submitter-{submission}"
        role = role_name(submission)
        return cls(
            queue=fit(base, 76),
            dead_letter_queue=fit(base, 76) + "-dlq",
            launch_template=fit(base, 128),
            group=fit(base, 255),
            security_group=fit(base, 255),
            role=role,
            instance_profile=role,
        )


@dataclass(frozen=True)
class PoolPlan:
    """What the pool creates for a plan; built by `pool_plan`, read by capacity and --dry-run."""

    names: Names
    workers: int
    user_data: str
    iam_policy: dict[str, Any]
    launch_template: dict[str, Any]
    group: dict[str, Any]
    security_group: dict[str, Any]
    queue: dict[str, Any]
    job_role: dict[str, Any] | None = None  # the spec's `permissions` as a role (backends/job_role.py)

    def to_json(self) -> dict[str, Any]:
        launch_template = dict(self.launch_template)
        launch_template["UserData"] = f"<base64 of user_data: {len(self.user_data.encode())} bytes>"
        return {
            "launch": {
                "names": asdict(self.names),
                "workers": self.workers,
                "launch_template": launch_template,
                "auto_scaling_group": self.group,
                "security_group": self.security_group,
                "queue": self.queue,
            },
            "user_data": self.user_data,
            "iam_policy": self.iam_policy,
            # None: the spec asks for no AWS access, and the container gets no credentials at all.
            "job_role": self.job_role,
        }


def pool_plan(plan: Plan) -> PoolPlan:
    spec = plan.spec
    names = Names.of(plan.submission_id)
    data = user_data(plan, names)
    template = launch_template(plan, names, data)
    if plan.ssh_key:  # only when asked: `submitter ssh`
        template["KeyName"] = plan.ssh_key
    return PoolPlan(
        names=names,
        workers=min(len(plan.runs), spec.queue.max_workers),
        user_data=data,
        iam_policy=instance_policy(plan, names),
        job_role=job_role.describe(plan),
        launch_template=template,
        group=group(plan, names),
        security_group={
            "GroupName": names.security_group,
            "Description": f"submitter {plan.submission_id}: no inbound rules",
            "IpPermissions": [],
        },
        queue={
            "QueueName": names.queue,
            "DeadLetterQueueName": names.dead_letter_queue,
            "VisibilityTimeout": contract.VISIBILITY_TIMEOUT_S,
            "MessageRetentionPeriod": QUEUE_RETENTION_S,
            "maxReceiveCount": spec.retries.on_interruption + spec.retries.on_failure + 2,
            "messages": len(plan.runs),
            "SqsManagedSseEnabled": True,
        },
    )


def user_data(plan: Plan, names: Names) -> str:
    """The boot script: checked against EC2's 16 KB limit when rendered."""
    from submitter.runtime import artefact

    return artefact.user_data({
        "SUBMISSION": plan.submission_id,
        "BUCKET": plan.bucket_or_placeholder,
        "PREFIX": plan.prefix,
        "GROUP": names.group,
        "DEADMAN_MINUTES": contract.deadman_minutes(plan.spec.limits.max_runtime),
        "RUNTIME_SHA256": artefact.sha256(),  # the host runs only the runtime staged with this plan
        "BUCKET_OWNER": plan.account if plan.account.isdigit() else "",  # "": the host asks IMDS (dry run)
    })


def launch_template(plan: Plan, names: Names, data: str) -> dict[str, Any]:
    spec = plan.spec
    tag_list = [{"Key": k, "Value": v} for k, v in plan.tags.items()]
    return {
        "ImageId": f"resolve:ssm:{GPU_AMI_PARAMETER if uses_gpu(spec) else AMI_PARAMETER}",
        "UserData": base64.b64encode(data.encode()).decode(),
        "IamInstanceProfile": {"Name": names.instance_profile},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {
            "HttpTokens": "required",
            # 1: IMDSv2's token answer dies at the docker bridge, so the job container never gets the instance
            # role (the boot script also drops the bridge's traffic to IMDS; a job's AWS access is its job role).
            "HttpPutResponseHopLimit": 1,
            "HttpEndpoint": "enabled",
        },
        "BlockDeviceMappings": [{"DeviceName": DATA_DEVICE, "Ebs": data_volume(spec.resources.volume_gb,
                                                                                plan.warm_cache)}],
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tag_list},
            {"ResourceType": "volume", "Tags": tag_list},
        ],
    }


def data_volume(volume_gb: int, warm_cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data volume's EBS mapping; restored from the image's warm cache snapshot when there is one (it is never
    smaller than its snapshot; the boot formats only a blank volume, runtime/host.py)."""
    ebs: dict[str, Any] = {"VolumeSize": volume_gb, "VolumeType": "gp3", "Encrypted": True,
                           "DeleteOnTermination": True}
    if warm_cache:
        ebs["SnapshotId"] = warm_cache["snapshot_id"]
        ebs["VolumeSize"] = max(volume_gb, int(warm_cache["size_gb"]))
    return ebs


def group(plan: Plan, names: Names) -> dict[str, Any]:
    spec, placements = plan.spec, plan.placements
    # The kept pools' types, best expected cost first (placement/rank.py): the order is the preference where the
    # strategy is prioritised; every type of the spec when nothing is known of the market.
    types = list(dict.fromkeys([p.instance_type for p in placements])) or list(spec.resources.instance_types)
    distribution: dict[str, Any] = {
        "OnDemandBaseCapacity": 0,
        "OnDemandPercentageAboveBaseCapacity": 0,
        "SpotAllocationStrategy": plan.strategy.get("allocation") or SPOT_ALLOCATION,
    }
    if spec.resources.max_price is not None:
        distribution["SpotMaxPrice"] = f"{spec.resources.max_price:.4f}"
    return {
        "AutoScalingGroupName": names.group,
        "MinSize": 0,
        "MaxSize": spec.queue.max_workers,
        "DesiredCapacity": min(len(plan.runs), spec.queue.max_workers),
        "AvailabilityZones": zones(placements) or "any with a subnet",
        "MixedInstancesPolicy": {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateName": names.launch_template, "Version": "$Latest"},
                "Overrides": [{"InstanceType": t} for t in types],
            },
            "InstancesDistribution": distribution,
        },
        "NewInstancesProtectedFromScaleIn": False,
        "Tags": [{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in plan.tags.items()],
    }


def zones(placements: list[Placement]) -> list[str]:
    return sorted({p.availability_zone for p in placements})


def instance_policy(plan: Plan, names: Names, inputs: Sequence[str] | None = None) -> dict[str, Any]:
    """The instance role's only permissions: what a run may reach (backends/policy.py), plus what a worker host
    does: its queue, pulls from the repository, and leaving its own group. `inputs`: the staged inputs' URIs
    (None before staging: a placeholder per input, what --dry-run shows)."""
    region, account = plan.region, plan.account
    host: list[dict[str, Any]] = [
        {
            "Sid": "OwnQueue",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                       "sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
            "Resource": [f"arn:aws:sqs:{region}:{account}:{names.queue}"],
        },
        {
            "Sid": "EcrLogin",
            "Effect": "Allow",
            "Action": ["ecr:GetAuthorizationToken"],
            "Resource": ["*"],  # this action has no resource-level scoping
        },
        {
            "Sid": "PullTrainingImage",
            "Effect": "Allow",
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            "Resource": [f"arn:aws:ecr:{region}:{account}:repository/{plan.ecr_repository}"],
        },
        {
            "Sid": "LeaveOwnGroup",
            "Effect": "Allow",
            "Action": ["autoscaling:TerminateInstanceInAutoScalingGroup"],
            "Resource": [
                f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{names.group}"
            ],
        },
    ]
    if plan.spec.limits.keep_on_failure:
        host += keep_statements(plan, names)
    if job_role.wanted(plan):
        host.append(job_role.assume_statement(plan))
    shared = policy.run_statements(plan, inputs)
    storage = [s for s in shared if s["Sid"] in policy.STORAGE]
    return policy.document(storage + host + [s for s in shared if s["Sid"] not in policy.STORAGE])


def keep_statements(plan: Plan, names: Names) -> list[dict[str, Any]]:
    """limits.keep_on_failure: a worker whose run failed leaves its own group without giving up the group's slot
    (DetachInstances; the group starts a replacement), and marks itself kept with one tag, on instances of this
    submission only (docs/keep.md)."""
    region, account = plan.region, plan.account
    return [
        {
            "Sid": "DetachFromOwnGroup",
            "Effect": "Allow",
            "Action": ["autoscaling:DetachInstances"],
            "Resource": [
                f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{names.group}"
            ],
        },
        {
            "Sid": "MarkSelfKept",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": [f"arn:aws:ec2:{region}:{account}:instance/*"],
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/{contract.TAG_SUBMISSION}": plan.submission_id},
                "ForAllValues:StringEquals": {"aws:TagKeys": [contract.TAG_KEEP_UNTIL]},
            },
        },
    ]
