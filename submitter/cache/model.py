"""The warm image cache, pure: what a cache snapshot is, what it costs, which ones are stale, and what `submitter
cache` launches to make one (its instance, role policy and tags). `--dry-run` shows these."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from submitter import contract
from submitter.backends import policy
from submitter.backends.pool.resources import AMI_PARAMETER, GPU_AMI_PARAMETER, Names, launch_template
from submitter.plan import Plan, uses_gpu

# EBS prices in us-east-1 (docs/image.md cites AWS's pricing page): snapshot storage (standard tier) per GB-month of
# the blocks it holds, and Fast Snapshot Restore per snapshot per Availability Zone per hour it is enabled.
SNAPSHOT_USD_PER_GB_MONTH = 0.05
FSR_USD_PER_AZ_HOUR = 0.75
HOURS_PER_MONTH = 730
DEFAULT_MAX_AGE_DAYS = 30  # SUBMITTER_CACHE_MAX_AGE_DAYS: gc drops a cache snapshot older than this
BUILD_WAIT_S = 3600  # the builder's boot, install and pull (a 3.5 GB image: minutes)
SNAPSHOT_WAIT_S = 3 * 3600  # a first snapshot copies every written block to S3


@dataclass(frozen=True)
class Cached:
    """One cache snapshot of ours, as DescribeSnapshots shows it."""

    snapshot_id: str
    digest: str
    job: str
    created: str
    size_gb: int
    state: str
    bucket: str
    prefix: str

    @classmethod
    def of(cls, snap: dict[str, Any]) -> Cached:
        tags = {t["Key"]: t["Value"] for t in snap.get("Tags") or []}
        started = snap.get("StartTime")
        return cls(
            snapshot_id=str(snap["SnapshotId"]), digest=tags.get(contract.TAG_CACHE_IMAGE, ""),
            job=tags.get(contract.TAG_JOB, ""),
            created=tags.get(contract.TAG_CACHE_CREATED) or (contract.iso(started) if started else ""),
            size_gb=int(snap.get("VolumeSize") or 0), state=str(snap.get("State", "")),
            bucket=tags.get(contract.TAG_BUCKET, ""), prefix=tags.get(contract.TAG_PREFIX, "").strip("/"),
        )

    @property
    def monthly_usd(self) -> float:
        """An upper bound: AWS bills the blocks written (about the pulled image's size), not the volume's size."""
        return round(self.size_gb * SNAPSHOT_USD_PER_GB_MONTH, 2)

    def age(self, now: datetime) -> timedelta | None:
        moment = contract.parse_iso(self.created)
        return now - moment if moment else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "monthly_usd_at_most": self.monthly_usd}

    def describe(self) -> str:
        return f"{self.snapshot_id} (image {self.digest}, {self.size_gb} GB)"


def ours(found: list[Cached], bucket: str | None, prefix: str) -> list[Cached]:
    """Those made for this bucket and prefix (as gc judges every resource: another team's are not ours)."""
    return [c for c in found if c.bucket == (bucket or "") and c.prefix == prefix.strip("/")]


def newest(found: list[Cached], digest: str) -> Cached | None:
    """The newest completed snapshot holding the image `digest`: the one a submit of that image maps."""
    usable = [c for c in found if c.digest == digest and c.state == "completed"]
    return max(usable, key=lambda c: c.created) if usable else None


def stale(found: list[Cached], now: datetime, max_age: timedelta, mapped: set[str]) -> list[tuple[Cached, str]]:
    """(snapshot, why) of each one gc drops: not the newest completed one of its job, or older than `max_age`, or
    failed; never one a live launch template of ours maps (`mapped`)."""
    out = []
    for c in found:
        if c.snapshot_id in mapped or c.state == "pending":
            continue
        jobs = [o for o in found if o.job == c.job and o.state == "completed"]
        age = c.age(now)
        if c.state == "error":
            out.append((c, "the snapshot failed"))
        elif jobs and max(jobs, key=lambda o: o.created).snapshot_id != c.snapshot_id:
            out.append((c, f"a newer cache of job {c.job} exists"))
        elif age is not None and age > max_age:
            out.append((c, f"older than {max_age.days} day(s) (SUBMITTER_CACHE_MAX_AGE_DAYS)"))
    return out


def costs(size_gb: int, zones: int = 1) -> dict[str, Any]:
    return {
        "snapshot_usd_per_month_at_most": round(size_gb * SNAPSHOT_USD_PER_GB_MONTH, 2),
        "snapshot_usd_per_gb_month": SNAPSHOT_USD_PER_GB_MONTH,
        "fast_snapshot_restore_usd_per_hour": round(FSR_USD_PER_AZ_HOUR * zones, 2),
        "fast_snapshot_restore_usd_per_month": round(FSR_USD_PER_AZ_HOUR * zones * HOURS_PER_MONTH, 2),
        "fast_snapshot_restore": "not enabled: a restored volume loads each block from S3 on its first read",
    }


# ------------------------------------------------------------------------------------------ the builder


def snapshot_tags(plan: Plan, digest: str, created: str) -> dict[str, str]:
    return {**plan.tags, contract.TAG_CACHE_IMAGE: digest, contract.TAG_CACHE_CREATED: created,
            "Name": f"submitter cache {plan.job}"}


def builder_policy(plan: Plan) -> dict[str, Any]:
    """The builder instance's only permissions: read its submission's documents (the submission document and the
    runtime), pull the image, and write its own report. Nothing of EC2: the CLI makes the snapshot."""
    layout, bucket, sub = plan.layout, plan.bucket_or_placeholder, plan.submission_id
    region, account = plan.region, plan.account
    return policy.document([
        {"Sid": "OwnObjectsRead", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{layout.submission(sub)}*"]},
        {"Sid": "OwnReport", "Effect": "Allow", "Action": ["s3:PutObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{layout.instances(sub)}*"]},
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"],
         "Resource": ["*"]},  # this action has no resource-level scoping
        {"Sid": "PullTrainingImage", "Effect": "Allow",
         "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
         "Resource": [f"arn:aws:ecr:{region}:{account}:repository/{plan.ecr_repository}"]},
    ])


def builder_user_data(plan: Plan, names: Names) -> str:
    from submitter.runtime import artefact

    return artefact.user_data({
        "SUBMISSION": plan.submission_id, "BUCKET": plan.bucket_or_placeholder, "PREFIX": plan.prefix,
        "GROUP": "", "MODE": "cache", "RUNTIME_SHA256": artefact.sha256(),
        "DEADMAN_MINUTES": BUILD_WAIT_S // 60 + 10,  # powers off (stops) even if the builder hangs
        "BUCKET_OWNER": plan.account if plan.account.isdigit() else "",
    })


def builder_instance(plan: Plan, names: Names, user_data: str) -> dict[str, Any]:
    """RunInstances' parameters for the builder: the job's launch template shape (AMI, IMDSv2 hop 1, the encrypted
    data volume, tags, its own role), on demand, and shutdown `stop`, so the filled volume stays for the snapshot.
    The CLI fills in ImageId (the AMI parameter's value), the subnet and the security group."""
    template = launch_template(plan, names, user_data)
    types = [p.instance_type for p in plan.placements] or list(plan.spec.resources.instance_types)
    return {
        "ImageId": template["ImageId"], "InstanceType": types[0],
        "UserData": user_data,  # boto3 base64-encodes RunInstances' UserData itself (botocore's handlers)
        "IamInstanceProfile": template["IamInstanceProfile"],
        "InstanceInitiatedShutdownBehavior": "stop",
        "MetadataOptions": template["MetadataOptions"],
        "BlockDeviceMappings": template["BlockDeviceMappings"],
        "TagSpecifications": template["TagSpecifications"],
    }


def ami_parameter(plan: Plan) -> str:
    return GPU_AMI_PARAMETER if uses_gpu(plan.spec) else AMI_PARAMETER


def dry_run(plan: Plan) -> dict[str, Any]:
    names = Names.of(plan.submission_id)
    data = builder_user_data(plan, names)
    instance = builder_instance(plan, names, data)
    instance["UserData"] = f"<base64 of user_data: {len(data.encode())} bytes>"
    size = int(instance["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"])
    return {"submission_id": plan.submission_id, "job": plan.job, "image": plan.image,
            "builder": {"names": {"role": names.role, "instance_profile": names.instance_profile,
                                  "security_group": names.security_group}, "run_instances": instance,
                        "iam_policy": builder_policy(plan)},
            "snapshot": {"size_gb": size, "tags": snapshot_tags(plan, "<the image's digest>", "<when made>"),
                         **costs(size)}}


def describe(shown: dict[str, Any]) -> list[str]:
    """The dry run in a few lines."""
    builder, snap = shown["builder"], shown["snapshot"]
    run = builder["run_instances"]
    return [
        f"{shown['job']}: a warm image cache for submission {shown['submission_id']}",
        f"  builder: 1 on-demand {run['InstanceType']} ({run['ImageId'].removeprefix('resolve:ssm:')}), "
        f"IMDSv2 hop 1, {snap['size_gb']} GB encrypted gp3 data volume, shutdown stops it; role "
        f"{builder['names']['role']} ({len(builder['iam_policy']['Statement'])} statements: its documents, "
        "the image pull, its report)",
        "  it pulls the image onto the volume, stops; the volume is snapshotted; the builder, its role and "
        "security group are removed",
        f"  snapshot: {snap['size_gb']} GB volume: at most ${snap['snapshot_usd_per_month_at_most']:.2f}/month "
        f"(${snap['snapshot_usd_per_gb_month']}/GB-month of the blocks written, about the pulled image)",
        f"  fast snapshot restore: not enabled (it would be ${snap['fast_snapshot_restore_usd_per_hour']:.2f}/h per "
        f"zone, ${snap['fast_snapshot_restore_usd_per_month']:.0f}/month); without it a worker's first read of "
        "each block waits on S3",
    ]
