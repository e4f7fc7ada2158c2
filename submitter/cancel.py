"""Cancel a run or a whole submission: markers the agent honours, queued runs dropped, no new worker, running
containers stopped gracefully (outputs uploaded), then nothing left alive or billing.

The agent (boot/agent.py) looks for `runs/RUN/cancel` and `submissions/S/cancel` before it starts a run and
every few seconds while one runs; it drops a message whose run's status is already terminal. SQS cannot
delete one chosen message, so a queued run is cancelled by its status and its message dropped by a worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from submitter import capacity, tracking
from submitter.aws import autoscaling as asg_api
from submitter.aws import ec2 as ec2_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.errors import UsageError
from submitter.plan import Names

WAIT_S = 600.0  # the agent's grace (90 s) + final uploads, with room for a slow upload
POLL_S = 3.0
NOT_STARTED = ("queued", "interrupted", "unknown")  # no container runs for these now


@dataclass(frozen=True)
class Scope:
    """What a cancel is about: a submission, and its runs the cancel names (all of them, or one)."""

    submission: str
    run_ids: list[str]
    all_runs: list[str]
    whole: bool  # the whole submission (else one run)

    def describe(self) -> str:
        if self.whole:
            return f"submission {self.submission} ({len(self.run_ids)} run(s))"
        return f"run {self.run_ids[0]} of submission {self.submission}"


def scope(s3: S3, where: tracking.Where, target: str) -> Scope:
    """RUN or SUBMISSION id -> Scope; a job name is refused (cancelling 'the latest' by accident is costly)."""
    status = s3.get_json(where.run(target) + "status.json")
    if status is not None:
        sub = str(status.get("submission_id") or "")
        return Scope(sub, [target], tracking.runs_of(s3, where, sub) if sub else [target], whole=False)
    if s3.exists(where.submission(target) + "queued") or s3.exists(where.submission(target) + "submission.json"):
        runs = tracking.runs_of(s3, where, target)
        return Scope(target, runs, runs, whole=True)
    raise UsageError(target, f"no run or submission of that name in s3://{where.bucket}/{where.prefix}/",
                     "cancel takes a RUN or SUBMISSION id; list them with `submitter status --all`")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cancel(aws: Aws, s3: S3, where: tracking.Where, target: Scope, say: Callable[[str], None],
           wait_s: float = WAIT_S, poll_s: float = POLL_S) -> dict[str, Any]:
    """Cancel, wait until running runs report `cancelled` and the instances are gone, then clean up.

    Returns {"submission", "runs": final statuses of the targeted runs, "removed": [...], "forced": [...]}."""
    sub = target.submission
    # 1. The markers first: from here on no worker starts a targeted run, and a running one stops within ~10 s.
    if target.whole:
        s3.put_json(where.submission(sub) + "cancel", {"at": _now()})
    else:
        s3.put_json(where.run(target.run_ids[0]) + "cancel", {"at": _now()})
    # 2. Runs no container holds now: cancelled by status; whichever worker receives the message drops it.
    dropped = []
    for st in tracking.statuses(s3, where, target.run_ids):
        if st.get("state") in NOT_STARTED:
            s3.put_json(where.run(st["run_id"]) + "status.json",
                        {**st, "state": "cancelled", "reason": "cancelled before it started", "ended_at": _now()})
            dropped.append(st["run_id"])
    if dropped:
        say(f"{sub}: {len(dropped)} run(s) not started: cancelled")
    # On AWS Batch the job is terminated instead; its wrapper uploads and reports like a worker does.
    from submitter import batch

    jobs = batch.cancel(aws, sub, bucket=where.bucket, prefix=where.prefix,
                        runs=None if target.whole else target.run_ids)
    if jobs:
        say(f"{sub}: terminated Batch job(s) {', '.join(jobs)}")
    # 3. No new worker: running ones are protected from scale-in, so lowering the count stops none of them.
    group_name = Names.of(sub).group
    autoscaling = aws.client("autoscaling")
    group = asg_api.group(autoscaling, group_name)
    if group is not None:
        others = [st for st in tracking.statuses(s3, where, target.all_runs)
                  if st.get("state") not in tracking.TERMINAL and st["run_id"] not in target.run_ids]
        busy = [st for st in tracking.statuses(s3, where, target.run_ids) if st.get("state") not in tracking.TERMINAL]
        desired = 0 if target.whole else min(int(group["DesiredCapacity"]), len(others) + len(busy))
        ids = [i["InstanceId"] for i in group.get("Instances", [])]
        if ids:
            asg_api.protect_from_scale_in(autoscaling, group_name, ids)
        if desired < int(group["DesiredCapacity"]):
            asg_api.set_desired(autoscaling, group_name, desired)
            say(f"{sub}: group {group_name} set to {desired} worker(s)")
    # 4. Wait for the running ones to stop, upload and report.
    deadline = time.monotonic() + wait_s
    seen: dict[str, str] = {}
    while True:
        states = tracking.statuses(s3, where, target.run_ids)
        for st in states:
            if seen.get(st["run_id"]) != st.get("state"):
                seen[st["run_id"]] = str(st.get("state"))
                say(f"{st['run_id']}: {st.get('state')}")
        live = [st for st in states if st.get("state") not in tracking.TERMINAL]
        if not live or time.monotonic() > deadline:
            break
        time.sleep(poll_s)
    forced = []
    for st in live:  # never confirmed: the instance goes anyway below; say what that means
        s3.put_json(where.run(st["run_id"]) + "status.json", {
            **st, "state": "cancelled", "ended_at": _now(),
            "reason": f"cancelled; no confirmation from its worker within {wait_s:.0f} s, instance terminated "
                      "(outputs may be incomplete)"})
        forced.append(st["run_id"])
    # 5. Clean up when the submission has nothing left to do; a run cancel leaves its worker to the other runs.
    remaining = [st for st in tracking.statuses(s3, where, target.all_runs)
                 if st.get("state") not in tracking.TERMINAL]
    removed: list[str] = []
    if target.whole or not remaining:
        say(f"{sub}: removing the group and its instances")
        names = Names.of(sub)
        if asg_api.delete_group(autoscaling, names.group):
            removed.append(f"group {names.group}")
        # Terminated directly too: instances protected from scale-in above may outlive a group delete (moto,
        # the sandbox's API, keeps them), and an instance outside the group must not stay either.
        leftover = [i["InstanceId"] for i in capacity.live_instances(aws, sub)]
        ec2_api.terminate(aws.client("ec2"), leftover)
        removed += [f"instance {i}" for i in leftover]
        removed += capacity.remove(aws, names, sub)
    elif forced:
        instances = {str(st.get("instance_id")) for st in states if st["run_id"] in forced and st.get("instance_id")}
        ec2_api.terminate(aws.client("ec2"), sorted(instances))
        removed += [f"instance {i}" for i in sorted(instances)]
    return {"submission": sub, "runs": tracking.statuses(s3, where, target.run_ids), "removed": removed,
            "forced": forced}
