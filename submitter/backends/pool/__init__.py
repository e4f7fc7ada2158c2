"""The worker-pool backend: runs staged in S3, one SQS message per run, and an Auto Scaling group of spot
workers of our own that take them (docs/runtime-contract.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from submitter import contract, ownership
from submitter.aws import autoscaling as asg_api
from submitter.aws import ec2 as ec2_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends import job_role, staging
from submitter.backends.base import Ledger, Orphan, Say, Scope
from submitter.backends.pool import capacity, stranded, submit, sweep
from submitter.backends.pool.resources import Names, PoolPlan, pool_plan
from submitter.errors import RemoteError
from submitter.plan import Plan
from submitter.progress import Progress

__all__ = ["Names", "PoolBackend", "PoolPlan", "pool_plan"]


class PoolBackend:
    name = "pool"
    kinds = sweep.KINDS

    def describe(self, plan: Plan) -> dict[str, Any]:
        # The warm cache (`submitter cache`) is known once the image's digest is: at submit, not in a dry run.
        warm = plan.warm_cache or {"snapshot_id": None, "looked_up": "by the image's digest at submit"}
        return {**pool_plan(plan).to_json(), "warm_cache": warm}

    def summary(self, plan: Plan) -> list[str]:
        pool = pool_plan(plan)
        lt = pool.launch_template
        volume = lt["BlockDeviceMappings"][0]
        distribution = pool.group["MixedInstancesPolicy"]["InstancesDistribution"]
        return [
            f"workers: {pool.workers} spot worker(s) at a time from queue {pool.names.queue}",
            "launch: " + ", ".join([
                f"AMI {lt['ImageId'].removeprefix('resolve:ssm:')}", "IMDSv2 required",
                f"{volume['Ebs']['VolumeSize']} GB encrypted gp3 at {volume['DeviceName']}",
                "shutdown terminates", "no inbound rules"]),
            f"spot strategy: {distribution['SpotAllocationStrategy']}, "
            f"max price {distribution.get('SpotMaxPrice', 'on-demand')}",
            f"boot script: {len(pool.user_data.encode())} bytes of 16384;"
            f" instance role: {len(pool.iam_policy['Statement'])} scoped statements",
            _job_role_line(plan),
            _warm_cache_line(plan),
        ]

    def submit(self, aws: Aws, plan: Plan, image_uri: str, secrets: dict[str, str], progress: Progress) -> None:
        submit.submit(aws, plan, pool_plan(plan), image_uri, secrets, progress)

    def stranded(self, aws: Aws, s3: S3, layout: contract.Layout, submission: str,
                 states: list[contract.Status]) -> list[contract.Status]:
        return stranded.stranded(aws, s3, layout, submission, states)

    def stop(self, aws: Aws, s3: S3, layout: contract.Layout, scope: Scope, say: Say) -> None:
        """No new worker: running ones are protected from scale-in, so lowering the count stops none of them;
        each stops its container when it sees the cancel marker."""
        from submitter import tracking

        group_name = Names.of(scope.submission).group
        autoscaling = asg_api.client(aws)
        group = asg_api.group(autoscaling, group_name)
        if group is None:
            return
        others = [st for st in tracking.read_statuses(s3, layout, scope.all_runs)
                  if not st.terminal and st.run_id not in scope.run_ids]
        busy = [st for st in tracking.read_statuses(s3, layout, scope.run_ids) if not st.terminal]
        desired = 0 if scope.whole else min(int(group["DesiredCapacity"]), len(others) + len(busy))
        ids = [i["InstanceId"] for i in group.get("Instances", [])]
        if ids:
            asg_api.protect_from_scale_in(autoscaling, group_name, ids)
        if desired < int(group["DesiredCapacity"]):
            asg_api.set_desired(autoscaling, group_name, desired)
            say(f"{scope.submission}: group {group_name} set to {desired} worker(s)")

    def force_stop(self, aws: Aws, unconfirmed: list[contract.Status], say: Say) -> list[str]:
        """Terminate the instances the unconfirmed runs' statuses name, each only once it is described and found
        tagged with the run's own submission (a forged status names anything)."""
        ec2 = ec2_api.client(aws)
        instances: set[str] = set()
        for st in unconfirmed:
            if not st.instance_id:
                continue
            try:
                found = ownership.instance(ec2, st.instance_id, ownership.submission_of_run(st.run_id), st.run_id)
            except RemoteError as refused:
                say(f"not terminated: {refused.where}: {refused.what}")
                continue
            if found is not None:
                instances.add(st.instance_id)
        ec2_api.terminate(ec2, sorted(instances))
        return [f"instance {i}" for i in sorted(instances)]

    def clean_up(self, aws: Aws, submission: str) -> list[str]:
        removed = capacity.remove(aws, submission)  # the workers first: a live one may still read its secrets
        return removed + staging.delete_secrets(aws, submission)

    def orphans(self, aws: Aws, ledger: Ledger, now: datetime) -> list[Orphan]:
        return sweep.orphans(aws, ledger, now)

    def remove(self, aws: Aws, orphans: list[Orphan], say: Say) -> list[Orphan]:
        return sweep.remove(aws, orphans, say)


def _job_role_line(plan: Plan) -> str:
    perms = plan.spec.permissions
    if not (perms.s3_read or perms.s3_write):
        return "job role: none (the container gets no AWS credentials)"
    return (f"job role: {job_role.name(plan.submission_id)}, reads {len(perms.s3_read) + len(perms.s3_write)}"
            f" S3 prefix(es), writes {len(perms.s3_write)}")


def _warm_cache_line(plan: Plan) -> str:
    cached = plan.warm_cache
    if cached:
        return f"warm cache: {cached['snapshot_id']} (image {cached['digest']}, {cached['size_gb']} GB)"
    if plan.image.get("digest"):
        return f"warm cache: none for image {plan.image['digest']} (`submitter cache SPEC` makes one)"
    return "warm cache: looked up by the image's digest at submit (`submitter cache SPEC` makes one)"
