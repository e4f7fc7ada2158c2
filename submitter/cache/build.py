"""`submitter cache SPEC`: build and push the job's image as `submit` does, then make the warm cache snapshot.

One on-demand instance (cache/model.py's builder: the job's launch template shape, its own role and security group)
boots the same boot script in cache mode (runtime/cache.py): it pulls the image onto its data volume, writes the
marker, unmounts, reports `cache-ready` and powers off; its shutdown behaviour `stop` keeps the volume. The CLI then
snapshots the volume, waits for `completed`, tags it, and removes the instance (its volume goes with it), the role,
the security group and the builder's S3 documents: on every path, also when something fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from submitter import contract, execute
from submitter.aws import ec2 as ec2_api
from submitter.aws import iam as iam_api
from submitter.aws import snapshots, ssm
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends import staging
from submitter.backends.pool.resources import DATA_DEVICE, Names
from submitter.cache import find, model
from submitter.errors import AwsError, SettingsError
from submitter.plan import Plan
from submitter.progress import Progress
from submitter.settings import Settings

POLL_S = 3.0


def make(aws: Aws, settings: Settings, plan: Plan, progress: Progress, engine: Callable[[], Any],
         build_wait_s: float = model.BUILD_WAIT_S) -> dict[str, Any]:
    """The image's cache snapshot: an existing completed one, else a new one. Returns what was done."""
    if not plan.bucket:
        raise SettingsError("SUBMITTER_BUCKET", "no bucket is set",
                            "run `submitter init` (it records the bucket in .env), or set SUBMITTER_BUCKET")
    image = execute.ensure_images(aws, settings, [plan], progress, engine)[0]
    existing = find(aws, plan.bucket, plan.prefix, image.digest)
    if existing is not None:
        progress.done(f"warm cache exists already: {existing.describe()}; nothing made")
        return {"created": False, "image": image.uri_with_digest, "snapshot": existing.to_json()}
    builder = Builder(aws, plan, progress)
    try:
        cached = builder.run(image.uri_with_digest, image.digest, build_wait_s)
    finally:
        builder.clean_up()
    return {"created": True, "image": image.uri_with_digest, "snapshot": cached, "removed": builder.removed}


class Builder:
    """What one cache build creates, remembered as it is created, so that clean_up removes exactly that."""

    def __init__(self, aws: Aws, plan: Plan, progress: Progress) -> None:
        self.aws, self.plan, self.progress = aws, plan, progress
        self.names = Names.of(plan.submission_id)
        self.ec2 = ec2_api.client(aws)
        assert plan.bucket
        self.s3 = S3.connect(aws, plan.bucket)
        self.instance_id: str | None = None
        self.role = False
        self.group_id: str | None = None
        self.removed: list[str] = []

    def run(self, image_uri: str, digest: str, wait_s: float) -> dict[str, Any]:
        plan, names, layout, sub = self.plan, self.names, self.plan.layout, self.plan.submission_id
        self.s3.put_json(layout.submission_doc(sub), {
            "version": contract.SUBMISSION_VERSION, "submission_id": sub, "job": plan.job, "region": plan.region,
            "image": image_uri, "registry": image_uri.split("/", 1)[0], "purpose": "cache"})
        staging.put_runtime(self.s3, plan)
        zones = sorted({p.availability_zone for p in plan.placements[:1]}) or None
        subnet = ec2_api.default_subnets(self.ec2, zones)[0]
        iam = iam_api.client(self.aws)
        self.role = True
        iam_api.ensure_instance_role(iam, names.role, model.builder_policy(plan), plan.tags)
        iam_api.wait_instance_profile(iam, names.instance_profile)
        self.group_id = ec2_api.ensure_security_group(
            self.ec2, names.security_group, f"submitter cache {sub}: no inbound rules", subnet, plan.tags)
        params = model.builder_instance(plan, names, model.builder_user_data(plan, names))
        params.update(ImageId=snapshots.parameter(ssm.client(self.aws), model.ami_parameter(plan)),
                      SubnetId=subnet, SecurityGroupIds=[self.group_id])
        self.instance_id = str(snapshots.run_one(self.ec2, params)["InstanceId"])
        self.progress.done(f"cache builder {self.instance_id} ({params['InstanceType']}) launched: it pulls the image")
        volume = self._wait_ready(wait_s)
        created = contract.iso()
        tags = model.snapshot_tags(plan, digest, created)
        snapshot_id = snapshots.create(self.ec2, volume, f"submitter warm cache: {image_uri}", tags)
        try:
            snap = snapshots.wait_completed(self.ec2, snapshot_id, model.SNAPSHOT_WAIT_S)
        except AwsError:
            snapshots.delete(self.ec2, snapshot_id)
            raise
        cached = model.Cached.of({**snap, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]})
        self.progress.done(f"warm cache: {cached.describe()}, at most ${cached.monthly_usd:.2f}/month")
        return cached.to_json()

    def _wait_ready(self, wait_s: float) -> str:
        """The builder's data volume id once the builder reported `cache-ready` and stopped."""
        assert self.instance_id
        key = self.plan.layout.instance_report(self.plan.submission_id, self.instance_id)
        deadline = time.monotonic() + wait_s
        report: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            report = report or self.s3.get_json(key)
            state = snapshots.wait_state(self.ec2, self.instance_id, {"stopped", "terminated"}, 0)
            if report and report.get("state") != contract.CACHE_READY:
                break
            if state in ("stopped", "terminated"):
                break
            time.sleep(POLL_S)
        report = report or self.s3.get_json(key)  # it may have stopped right after its report was last looked for
        where = f"cache builder {self.instance_id}"
        if not report:
            raise AwsError("ec2", "RunInstances", "NoReport", f"{where} did not report within {int(wait_s)} s",
                           f"see its console output (`submitter --sandbox sandbox logs {self.instance_id}` "
                           "in the sandbox), then run `submitter cache` again")
        if report.get("state") != contract.CACHE_READY:
            raise AwsError("ec2", "RunInstances", str(report.get("state")), f"{where}: {report.get('reason')}",
                           "fix the cause, then run `submitter cache` again")
        if snapshots.wait_state(self.ec2, self.instance_id, {"stopped"}, 300) != "stopped":
            raise AwsError("ec2", "StopInstances", "NotStopped", f"{where} reported ready but did not stop",
                           "run `submitter cache` again")
        found = ec2_api.instance(self.ec2, self.instance_id) or {}
        for mapping in found.get("BlockDeviceMappings") or []:
            if mapping.get("DeviceName") == DATA_DEVICE:
                return str(mapping["Ebs"]["VolumeId"])
        raise AwsError("ec2", "DescribeInstances", "NoVolume", f"{where} has no volume at {DATA_DEVICE}", None)

    def clean_up(self) -> None:
        """Remove the builder, its role, security group and documents (its volume goes with it)."""
        names, sub = self.names, self.plan.submission_id
        if self.instance_id:
            ec2_api.terminate(self.ec2, [self.instance_id])
            snapshots.wait_state(self.ec2, self.instance_id, {"terminated"}, 300)
            self.removed.append(f"instance {self.instance_id}")
        if self.role and iam_api.delete_instance_role(iam_api.client(self.aws), names.role):
            self.removed.append(f"role {names.role}")
        if self.group_id and ec2_api.delete_security_group(self.ec2, self.group_id):
            self.removed.append(f"security group {self.group_id}")
        for item in list(self.s3.objects(self.plan.layout.submission(sub))):
            self.s3.delete(str(item["Key"]))
        self.progress.done("removed the cache builder: " + (", ".join(self.removed) or "nothing was made"))
