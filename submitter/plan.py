"""The plan: a pure function of a loaded spec, the settings and spot prices. `--dry-run` prints it.

It names every resource a submission will create (deterministically, from the submission id, so a
retried submit creates nothing twice), renders the boot script, the instance role policy and the launch
settings, and estimates the cost. `lookup_prices` is the one impure helper: it only reads prices.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from submitter import boot, pricing
from submitter.aws.ec2 import SpotPrice
from submitter.context import PLATFORM, content_tag
from submitter.errors import CapacityError, UsageError
from submitter.settings import Settings
from submitter.spec import LoadedSpec, Run, expand, submission_id

DEADMAN_MARGIN_S = 15 * 60  # boot, pull and upload on top of max_runtime before the host powers off
DATA_DEVICE = "/dev/sdf"
AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
GPU_FAMILIES = ("p", "g", "dl", "trn", "inf")
SPOT_ALLOCATION = "price-capacity-optimized"  # cheapest pools that are also least likely to be reclaimed
QUEUE_RETENTION_S = 14 * 86400
VISIBILITY_TIMEOUT_S = 300  # the agent extends it while a run is alive, so a dead worker's run reappears fast


@dataclass(frozen=True)
class PriceLookup:
    """Spot prices when they could be read, else why not (a dry run without credentials)."""

    prices: list[SpotPrice] | None
    note: str = ""
    zones: frozenset[str] | None = None  # AZs with a subnet in the account, when known


@dataclass(frozen=True)
class Placement:
    instance_type: str
    availability_zone: str
    spot_price: float
    on_demand: float | None

    @property
    def savings(self) -> float | None:
        return None if not self.on_demand else round(1 - self.spot_price / self.on_demand, 3)


@dataclass(frozen=True)
class Names:
    """Every resource name of one submission, derived from its id."""

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
        role = _fit(base, 64)
        return cls(
            queue=_fit(base, 76),
            dead_letter_queue=_fit(base, 76) + "-dlq",
            launch_template=_fit(base, 128),
            group=_fit(base, 255),
            security_group=_fit(base, 255),
            role=role,
            instance_profile=role,
        )


@dataclass(frozen=True)
class Plan:
    submission_id: str
    job: str
    spec_file: str
    region: str
    bucket: str | None
    prefix: str
    runs: list[Run]
    command: list[str]
    image: dict[str, Any]
    placements: list[Placement]
    excluded: list[Placement]
    price_note: str
    names: Names
    user_data: str
    iam_policy: dict[str, Any]
    launch_template: dict[str, Any]
    group: dict[str, Any]
    security_group: dict[str, Any]
    queue: dict[str, Any]
    tags: dict[str, str]
    estimate: dict[str, Any]
    loaded: LoadedSpec = field(repr=False, compare=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def workers(self) -> int:
        return min(len(self.runs), self.loaded.spec.queue.max_workers)

    def to_json(self) -> dict[str, Any]:
        launch_template = dict(self.launch_template)
        launch_template["UserData"] = f"<base64 of user_data: {len(self.user_data.encode())} bytes>"
        return {
            "submission_id": self.submission_id,
            "job": self.job,
            "spec_file": self.spec_file,
            "region": self.region,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "runs": [
                {"run_id": r.run_id, "index": r.index, "sweep": r.sweep, "env": r.env, "command": self.command,
                 "s3": self.run_uri(r.run_id)}
                for r in self.runs
            ],
            "image": self.image,
            "placement": {
                "candidates": [_placement_json(p) for p in self.placements],
                "excluded_over_max_price": [_placement_json(p) for p in self.excluded],
                "note": self.price_note,
            },
            "launch": {
                "names": asdict(self.names),
                "workers": self.workers,
                "launch_template": launch_template,
                "auto_scaling_group": self.group,
                "security_group": self.security_group,
                "queue": self.queue,
                "tags": self.tags,
            },
            "user_data": self.user_data,
            "iam_policy": self.iam_policy,
            "estimate": self.estimate,
            "warnings": self.warnings,
        }

    def run_uri(self, run_id: str) -> str:
        return f"s3://{self.bucket or '<bucket>'}/{self.prefix}/runs/{run_id}/"


def make_plan(
    loaded: LoadedSpec,
    settings: Settings,
    lookup: PriceLookup,
    *,
    now: datetime | None = None,
    token: str | None = None,
    account: str | None = None,
    submission: str | None = None,
) -> Plan:
    """Everything a submission will do, computed without touching AWS or docker.

    `submission` re-uses an id (a retried submit), so every name and message is the same as before."""
    spec = loaded.spec
    now = now or datetime.now(timezone.utc)
    if submission is None:
        submission = submission_id(spec.name, now, token or secrets.token_hex(3))
    elif not re.fullmatch(re.escape(spec.name) + r"-\d{8}-\d{6}-[0-9a-f]{6}", submission):
        raise UsageError("--id", f"{submission!r} is not a submission id of job {spec.name!r}",
                         f"use an id like {spec.name}-20261126-070000-abc123 from an earlier submit")
    runs = expand(spec, submission)
    region = spec.resources.region or settings.region
    names = Names.of(submission)
    warnings: list[str] = []
    if not settings.bucket:
        warnings.append("no bucket is set: run `submitter init` or set SUBMITTER_BUCKET before submitting")
    bucket = settings.bucket
    acct = account or "${aws:PrincipalAccount}"
    placements, excluded = _placements(loaded, region, lookup)
    image = _image(loaded, settings, region, account)
    deadline = now + timedelta(seconds=spec.limits.max_runtime + DEADMAN_MARGIN_S)
    tags = {
        "submitter:submission": submission,
        "submitter:job": spec.name,
        "submitter:deadline": deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    user_data = boot.render({
        "SUBMISSION": submission,
        "BUCKET": bucket or "UNSET-BUCKET",
        "PREFIX": settings.prefix,
        "GROUP": names.group,
        "DEADMAN_MINUTES": math.ceil((spec.limits.max_runtime + DEADMAN_MARGIN_S) / 60),
    })
    return Plan(
        submission_id=submission,
        job=spec.name,
        spec_file=str(loaded.path),
        region=region,
        bucket=bucket,
        prefix=settings.prefix,
        runs=runs,
        command=spec.command,
        image=image,
        placements=placements,
        excluded=excluded,
        price_note=lookup.note,
        names=names,
        user_data=user_data,
        iam_policy=instance_policy(loaded, settings, names, region, acct, bucket or "UNSET-BUCKET"),
        launch_template=_launch_template(loaded, names, tags, user_data) | (
            {"KeyName": settings.ssh_key} if settings.ssh_key else {}),  # only when asked: `submitter ssh`
        group=_group(loaded, names, tags, len(runs), placements),
        security_group={
            "GroupName": names.security_group,
            "Description": f"submitter {submission}: no inbound rules",
            "IpPermissions": [],
        },
        queue={
            "QueueName": names.queue,
            "DeadLetterQueueName": names.dead_letter_queue,
            "VisibilityTimeout": VISIBILITY_TIMEOUT_S,
            "MessageRetentionPeriod": QUEUE_RETENTION_S,
            "maxReceiveCount": spec.retries.on_interruption + spec.retries.on_failure + 2,
            "messages": len(runs),
            "SqsManagedSseEnabled": True,
        },
        tags=tags,
        estimate=_estimate(loaded, region, len(runs), placements),
        loaded=loaded,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------- parts


def _image(loaded: LoadedSpec, settings: Settings, region: str, account: str | None) -> dict[str, Any]:
    spec = loaded.spec
    if spec.image.uri:
        return {"prebuilt": True, "uri": spec.image.uri}
    assert loaded.dockerfile is not None and loaded.context is not None
    tag = content_tag(loaded.dockerfile, loaded.context, spec.image.build_args)
    registry = settings.registry or f"{account or '<account>'}.dkr.ecr.{region}.amazonaws.com"
    return {
        "prebuilt": False,
        "tag": tag,
        "repository": settings.ecr_repository,
        "uri": f"{registry}/{settings.ecr_repository}:{tag}",
        "dockerfile": str(loaded.dockerfile),
        "context": str(loaded.context),
        "build_args": spec.image.build_args,
        "platform": PLATFORM,
    }


def _placements(loaded: LoadedSpec, region: str, lookup: PriceLookup) -> tuple[list[Placement], list[Placement]]:
    spec = loaded.spec
    if lookup.prices is None:
        return [], []
    offers = [
        Placement(p.instance_type, p.availability_zone, p.price, pricing.on_demand(region, p.instance_type))
        for p in lookup.prices
        if p.instance_type in spec.resources.instance_types
        and (lookup.zones is None or p.availability_zone in lookup.zones)
    ]
    offers.sort(key=lambda p: (p.spot_price, p.instance_type, p.availability_zone))
    cap = spec.resources.max_price
    eligible = [p for p in offers if cap is None or p.spot_price <= cap]
    excluded = [p for p in offers if p not in eligible]
    if not eligible:
        cheapest = f"; the cheapest offer is {offers[0].instance_type} in {offers[0].availability_zone} at " \
                   f"${offers[0].spot_price:.4f}/h" if offers else ""
        raise CapacityError(
            f"{loaded.path}: resources",
            f"no spot offer for {', '.join(spec.resources.instance_types)} in {region} at or under "
            f"max_price ${cap}/h{cheapest}",
            "raise resources.max_price, add instance types, or pick another region (see `submitter prices TYPE`)",
        )
    return eligible, excluded


def _is_gpu(instance_type: str) -> bool:
    return instance_type.split(".")[0].startswith(GPU_FAMILIES)


def _launch_template(loaded: LoadedSpec, names: Names, tags: dict[str, str], user_data: str) -> dict[str, Any]:
    spec = loaded.spec
    gpu = spec.resources.gpus != 0 and any(_is_gpu(t) for t in spec.resources.instance_types)
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    return {
        "ImageId": f"resolve:ssm:{GPU_AMI_PARAMETER if gpu else AMI_PARAMETER}",
        "UserData": base64.b64encode(user_data.encode()).decode(),
        "IamInstanceProfile": {"Name": names.instance_profile},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 2,  # 2 so the job container can reach IMDSv2 through the bridge
            "HttpEndpoint": "enabled",
        },
        "BlockDeviceMappings": [{
            "DeviceName": DATA_DEVICE,
            "Ebs": {
                "VolumeSize": spec.resources.volume_gb,
                "VolumeType": "gp3",
                "Encrypted": True,
                "DeleteOnTermination": True,
            },
        }],
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tag_list},
            {"ResourceType": "volume", "Tags": tag_list},
        ],
    }


def _group(
    loaded: LoadedSpec, names: Names, tags: dict[str, str], runs: int, placements: list[Placement]
) -> dict[str, Any]:
    spec = loaded.spec
    # Cheapest candidates first: the order is the preference where the strategy is prioritised.
    types = list(dict.fromkeys([p.instance_type for p in placements] + spec.resources.instance_types))
    distribution: dict[str, Any] = {
        "OnDemandBaseCapacity": 0,
        "OnDemandPercentageAboveBaseCapacity": 0,
        "SpotAllocationStrategy": SPOT_ALLOCATION,
    }
    if spec.resources.max_price is not None:
        distribution["SpotMaxPrice"] = f"{spec.resources.max_price:.4f}"
    return {
        "AutoScalingGroupName": names.group,
        "MinSize": 0,
        "MaxSize": spec.queue.max_workers,
        "DesiredCapacity": min(runs, spec.queue.max_workers),
        "AvailabilityZones": sorted({p.availability_zone for p in placements}) or "any with a subnet",
        "MixedInstancesPolicy": {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateName": names.launch_template, "Version": "$Latest"},
                "Overrides": [{"InstanceType": t} for t in types],
            },
            "InstancesDistribution": distribution,
        },
        "NewInstancesProtectedFromScaleIn": False,
        "Tags": [{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in tags.items()],
    }


def instance_policy(
    loaded: LoadedSpec, settings: Settings, names: Names, region: str, account: str, bucket: str
) -> dict[str, Any]:
    """The instance role's only permissions: this submission's S3 keys and queue, pulls from the
    repository, its secrets, and leaving its own group."""
    spec = loaded.spec
    submission = names.group.removeprefix("submitter-")
    prefix = settings.prefix
    own = [f"{prefix}/runs/{submission}*", f"{prefix}/submissions/{submission}/*"]
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OwnRunObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in own],
        },
        {
            "Sid": "StagedInputs",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/inputs/*"],
        },
        {
            "Sid": "ListOwnPrefixes",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": [*own, f"{prefix}/inputs/*"]}},
        },
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
            "Resource": [f"arn:aws:ecr:{region}:{account}:repository/{settings.ecr_repository}"],
        },
        {
            "Sid": "LeaveOwnGroup",
            "Effect": "Allow",
            "Action": ["autoscaling:TerminateInstanceInAutoScalingGroup"],
            "Resource": [
                f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{names.group}"
            ],
        },
        {
            "Sid": "ReadSpotPrice",
            "Effect": "Allow",
            "Action": ["ec2:DescribeSpotPriceHistory"],
            "Resource": ["*"],  # read-only, no resource-level scoping exists
        },
    ]
    if spec.secrets:
        statements.append({
            "Sid": "OwnSecrets",
            "Effect": "Allow",
            "Action": ["ssm:GetParameters", "ssm:GetParameter"],
            "Resource": [f"arn:aws:ssm:{region}:{account}:parameter/submitter/{submission}/*"],
        })
    s3_inputs = sorted({i.source for i in spec.inputs if i.source.startswith("s3://")})
    if s3_inputs:
        statements.append({
            "Sid": "ReadS3Inputs",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": sorted({arn for uri in s3_inputs for arn in _s3_arns(uri)}),
        })
    return {"Version": "2012-10-17", "Statement": statements}


def _s3_arns(uri: str) -> list[str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{key}*"]


def _estimate(loaded: LoadedSpec, region: str, runs: int, placements: list[Placement]) -> dict[str, Any]:
    spec = loaded.spec
    hours = spec.limits.max_runtime / 3600
    ebs = pricing.ebs_per_hour(region, spec.resources.volume_gb)
    result: dict[str, Any] = {
        "currency": "USD",
        "runs": runs,
        "max_runtime_hours": round(hours, 3),
        "basis": "runs x max_runtime x (spot price + EBS); each run stops at limits.max_cost",
        "max_cost_per_run": spec.limits.max_cost,
    }
    if not placements:
        result.update({"spot_price_per_hour": "unknown", "per_run_at_most": "unknown", "total_at_most": "unknown"})
        if spec.resources.max_price is not None:
            per_run = hours * (spec.resources.max_price + ebs)
            result["total_at_most_at_max_price"] = round(_capped(per_run, spec.limits.max_cost) * runs, 4)
        return result
    best = placements[0]
    per_run = _capped(hours * (best.spot_price + ebs), spec.limits.max_cost)
    result.update({
        "spot_price_per_hour": best.spot_price,
        "instance_type": best.instance_type,
        "availability_zone": best.availability_zone,
        "ebs_per_hour": round(ebs, 5),
        "per_run_at_most": round(per_run, 4),
        "total_at_most": round(per_run * runs, 4),
    })
    if best.on_demand:
        result["on_demand_total"] = round(hours * (best.on_demand + ebs) * runs, 4)
    return result


def _capped(value: float, cap: float | None) -> float:
    return min(value, cap) if cap is not None else value


def _placement_json(p: Placement) -> dict[str, Any]:
    return {"instance_type": p.instance_type, "availability_zone": p.availability_zone,
            "spot_price": p.spot_price, "on_demand": p.on_demand, "savings": p.savings}


def _fit(name: str, limit: int) -> str:
    """`name` if it fits AWS's length limit, else a prefix of it plus a short hash (still unique)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}-{digest}"


# ---------------------------------------------------------------------------------------------- prices


def lookup_prices(loaded: LoadedSpec, settings: Settings) -> PriceLookup:
    """Read live spot prices (and the AZs with subnets) when credentials are at hand; never creates anything."""
    from submitter.aws import session
    from submitter.aws.ec2 import spot_prices, subnet_zones
    from submitter.errors import SubmitterError

    if not session.has_credentials(settings):
        where = "the sandbox is not running" if settings.sandbox else "no AWS credentials"
        return PriceLookup(None, f"spot prices unknown ({where})")
    try:
        aws = session.connect(settings)
        ec2 = aws.client("ec2")
        prices = spot_prices(ec2, loaded.spec.resources.instance_types)
        zones = subnet_zones(ec2)
    except SubmitterError as err:
        return PriceLookup(None, f"spot prices unknown ({err.what})")
    source = "sandbox price table (not live)" if settings.sandbox else "live spot price history"
    return PriceLookup(prices, f"{source}, read {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", zones)
