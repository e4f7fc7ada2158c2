"""Runs the pool can no longer start: its group is down to zero workers (every worker left after a boot
failure) while they are still queued. They are marked failed with the workers' own reason."""

from __future__ import annotations

from submitter import contract
from submitter.aws import autoscaling as asg_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends.pool import capacity
from submitter.backends.pool.resources import Names
from submitter.runtime import index


def stranded(aws: Aws, s3: S3, layout: contract.Layout, submission: str,
             states: list[contract.Status]) -> list[contract.Status]:
    mine = [s for s in states if s.run_id.startswith(submission) and not s.terminal]
    if not mine:
        return []
    group = asg_api.group(asg_api.client(aws), Names.of(submission).group)
    if group is None or group["DesiredCapacity"] > 0 or capacity.live_instances(aws, submission):
        return []
    reports = [s3.get_json(o["Key"]) for o in s3.objects(layout.instances(submission))]
    reasons = [r.get("reason") for r in reports if r and r.get("reason")]
    reason = f"no worker left: {reasons[-1]}" if reasons else "no worker left (every instance exited)"
    marked = []
    for status in mine:
        failed = status.evolve(contract.FAILED, reason=reason)
        index.put_status(s3, layout, failed, previous=status)
        marked.append(failed)
    return marked
