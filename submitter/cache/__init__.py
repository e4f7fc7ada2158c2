"""The warm image cache (`submitter cache`, docs/image.md): an EBS snapshot of a data volume that holds the job's
pulled image, keyed by the image's digest. `build.py` makes one; a pool submit of that image maps the newest one
as its workers' data volume (`attach`); `gc` drops the stale ones (`orphans`); `model.py` is the pure part."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from submitter import contract
from submitter.aws import ec2 as ec2_api
from submitter.aws import snapshots
from submitter.aws.session import Aws
from submitter.backends.base import Ledger, Orphan, Say
from submitter.cache.model import Cached, newest, ours, stale
from submitter.plan import Plan
from submitter.progress import Progress

KIND = "snapshot"

__all__ = ["KIND", "Cached", "attach", "drop", "find", "listed", "orphans", "remove"]


def listed(aws: Aws, bucket: str | None, prefix: str, filters: list[dict[str, Any]] | None = None) -> list[Cached]:
    """Our cache snapshots for this bucket and prefix, newest first."""
    found = ours([Cached.of(s) for s in snapshots.ours(ec2_api.client(aws), filters)], bucket, prefix)
    return sorted(found, key=lambda c: c.created, reverse=True)


def find(aws: Aws, bucket: str | None, prefix: str, digest: str) -> Cached | None:
    return newest(listed(aws, bucket, prefix, [{"Name": f"tag:{contract.TAG_CACHE_IMAGE}", "Values": [digest]}]),
                  digest)


def attach(aws: Aws, plan: Plan, digest: str, progress: Progress) -> Plan:
    """The plan with its image's warm cache, when `submitter cache` made one: the launch template maps it."""
    cached = find(aws, plan.bucket, plan.prefix, digest)
    if cached is None:
        progress.done(f"warm cache: none for image {digest[:19]} (`submitter cache` makes one)")
        return plan
    progress.done(f"warm cache: {cached.describe()}")
    return dataclasses.replace(plan, warm_cache=cached.to_json())


def drop(aws: Aws, bucket: str | None, prefix: str, snapshot_id: str) -> Cached | None:
    """Delete one cache snapshot of ours (None: no such snapshot of ours); refused while a launch template maps it."""
    from submitter.errors import UsageError

    found = {c.snapshot_id: c for c in listed(aws, bucket, prefix)}
    if snapshot_id not in found:
        return None
    if snapshot_id in mapped(aws):
        raise UsageError(snapshot_id, "a live launch template of a submission maps it",
                         "wait until that submission ends (or cancel it), then drop it")
    snapshots.delete(ec2_api.client(aws), snapshot_id)
    return found[snapshot_id]


def mapped(aws: Aws) -> set[str]:
    """The snapshots our live launch templates map (their latest versions'; a submission's template has one)."""
    ec2 = ec2_api.client(aws)
    out: set[str] = set()
    for template in ec2_api.launch_templates(ec2, [{"Name": "tag-key", "Values": [contract.TAG_SUBMISSION]}]):
        for version in ec2_api.template_versions(ec2, str(template["LaunchTemplateId"])):
            for mapping in version.get("LaunchTemplateData", {}).get("BlockDeviceMappings") or []:
                if mapping.get("Ebs", {}).get("SnapshotId"):
                    out.add(str(mapping["Ebs"]["SnapshotId"]))
    return out


def orphans(aws: Aws, ledger: Ledger, now: datetime, max_age_days: int) -> list[Orphan]:
    """gc: our cache snapshots that are stale (model.stale) and judged by this bucket and prefix (`ledger.ours`)."""
    found = [Cached.of(s) for s in snapshots.ours(ec2_api.client(aws))]
    found = [c for c in found if ledger.ours({contract.TAG_BUCKET: c.bucket, contract.TAG_PREFIX: c.prefix})]
    if not found:
        return []
    return [Orphan(KIND, c.snapshot_id, c.job, why)
            for c, why in stale(found, now, timedelta(days=max_age_days), mapped(aws))]


def remove(aws: Aws, found: list[Orphan], say: Say) -> list[Orphan]:
    from submitter.errors import SubmitterError

    removed = []
    for orphan in found:
        try:
            snapshots.delete(ec2_api.client(aws), orphan.id)
        except SubmitterError as exc:
            say(f"not removed: snapshot {orphan.id}: {exc}")
            continue
        removed.append(orphan)
    return removed
