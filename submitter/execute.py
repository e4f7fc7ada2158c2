"""Submit for real: plan -> image -> stage -> capacity, then optionally wait and clean up.

`--dry-run` is this pipeline with the executor left out (cli.py prints the plan instead).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitter import capacity, tracking
from submitter import settings as settings_mod
from submitter.aws.errors import translate
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.errors import SettingsError, UsageError
from submitter.plan import Plan, PriceLookup, make_plan
from submitter.progress import Progress
from submitter.settings import Settings
from submitter.spec import LoadedSpec

POLL_S = 3.0


@dataclass
class Submitted:
    plan: Plan
    image_uri: str
    image_facts: dict[str, Any] = field(default_factory=dict)
    backend: str = "pool"  # or "batch": AWS Batch ran it (submitter/batch.py); nothing of ours to remove


def account_id(aws: Aws) -> str:
    with translate("sts", "GetCallerIdentity"):
        return str(aws.client("sts").get_caller_identity()["Account"])


def prices(aws: Aws, loaded: LoadedSpec) -> PriceLookup:
    from submitter.aws.ec2 import spot_prices, subnet_zones

    ec2 = aws.client("ec2")
    source = "sandbox price table (not live)" if aws.endpoint_url else "live spot price history"
    return PriceLookup(spot_prices(ec2, loaded.spec.resources.instance_types), source, subnet_zones(ec2))


def submit(
    aws: Aws,
    settings: Settings,
    specs: list[LoadedSpec],
    environ: Mapping[str, str],
    cwd: Path,
    progress: Progress,
    engine: Callable[[], Any],
    submission: str | None = None,
    backend: str | None = None,
) -> list[Submitted]:
    """Validate everything that can fail on the user's side first, then build, stage and launch.

    `backend` (pool | batch) overrides each spec's resources.backend."""
    from submitter import image as image_mod
    from submitter import stage as stage_mod

    if backend not in (None, "pool", "batch"):
        raise UsageError("--backend", f"{backend!r} is not a backend", "use --backend pool or --backend batch")
    if submission and len(specs) != 1:
        raise UsageError("--id", "names one submission, so it takes one spec file", "submit the files one by one")
    if not settings.bucket:
        raise SettingsError("SUBMITTER_BUCKET", "no bucket is set",
                            "run `submitter init` (it records the bucket in .env), or set SUBMITTER_BUCKET")
    _check_bucket(aws, settings.bucket)
    account = account_id(aws)
    planned = []
    for loaded in specs:
        secrets = settings_mod.secret_values(loaded.spec.secrets, environ, cwd)
        plan = make_plan(loaded, settings, prices(aws, loaded), account=account, submission=submission)
        planned.append((plan, secrets))
    # Every image before any launch: a failing build of the second spec must not leave the first running.
    from submitter.aws.ecr import TokenCache

    cache = TokenCache(settings.home / "cache")
    docker_client = None
    images = []
    for plan, _ in planned:
        spec = plan.loaded.spec
        if spec.image.uri:
            images.append(image_mod.check_prebuilt(aws, None, spec.image.uri, progress))
            continue
        docker_client = docker_client or engine()
        assert plan.loaded.dockerfile and plan.loaded.context
        request = image_mod.BuildRequest(
            job=plan.job, dockerfile=plan.loaded.dockerfile, context=plan.loaded.context,
            build_args=spec.image.build_args, repository=settings.ecr_repository, tag=plan.image["tag"],
        )
        images.append(image_mod.ensure_image(aws, docker_client, request, progress, cache=cache))
    done = []
    for (plan, secrets), result in zip(planned, images, strict=True):
        chosen = backend or plan.loaded.spec.resources.backend
        if chosen == "batch":
            from submitter import batch

            batch.submit(aws, plan, result.uri_with_digest, secrets, progress)
        else:
            stage_mod.stage(aws, plan, result.uri_with_digest, secrets, progress)
            capacity.launch(aws, plan, progress)
        done.append(Submitted(plan, result.uri_with_digest, {
            "built": result.built, "pushed": result.pushed, "bytes_pushed": result.bytes_pushed,
            "layers_pushed": result.layers_pushed, "digest": result.digest}, chosen))
    return done


def _check_bucket(aws: Aws, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        aws.client("s3").head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        raise SettingsError(
            f"SUBMITTER_BUCKET={bucket}",
            "the bucket does not exist" if code in ("404", "NoSuchBucket") else f"the bucket is not usable ({code})",
            "run `submitter init` to create it, or fix SUBMITTER_BUCKET",
        ) from exc


def wait(
    aws: Aws,
    settings: Settings,
    submitted: list[Submitted],
    follow: bool,
    say: Callable[[str], None],
    poll_s: float = POLL_S,
) -> list[dict[str, Any]]:
    """Block until every run has ended; stream logs with `follow`; then remove what the submissions left."""
    assert settings.bucket
    s3 = S3(aws.client("s3"), settings.bucket)
    where = tracking.Where(settings.bucket, settings.prefix)
    run_ids = [r.run_id for s in submitted for r in s.plan.runs]
    seen_state: dict[str, str] = {}
    next_chunk: dict[str, int] = {}
    while True:
        states = tracking.statuses(s3, where, run_ids)
        for st in states:
            label = st.get("state", "unknown")
            if seen_state.get(st["run_id"]) != label:
                seen_state[st["run_id"]] = label
                extra = f" ({st['reason']})" if st.get("reason") and label != "succeeded" else ""
                say(f"{st['run_id']}: {label}{extra}")
            if follow:
                next_chunk[st["run_id"]] = tracking.print_new_chunks(
                    s3, where, st["run_id"], next_chunk.get(st["run_id"], 0), sys.stdout)
        if all(st.get("state") in tracking.TERMINAL for st in states):
            break
        for sub in (s for s in submitted if s.backend == "pool"):
            stranded = _stranded(aws, s3, where, sub, states)
            if stranded:
                say(f"{sub.plan.submission_id}: no worker is left for {len(stranded)} run(s): {stranded[0]['reason']}")
        time.sleep(poll_s)
    for sub in submitted:
        if sub.backend == "batch":  # Batch scales its hosts down itself; only the job role is ours
            from submitter.aws import iam as iam_api

            removed = [f"role {sub.plan.names.role}"] if iam_api.delete_instance_role(
                aws.client("iam"), sub.plan.names.role) else []
        else:
            removed = capacity.remove(aws, sub.plan.names, sub.plan.submission_id)
        if removed:
            say(f"{sub.plan.submission_id}: removed {', '.join(removed)}")
    return states


def _stranded(
    aws: Aws, s3: S3, where: tracking.Where, sub: Submitted, states: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Runs that can no longer start: the group is down to zero workers (every worker left after a boot
    failure) while they are still queued. They are marked failed with the workers' reason."""
    from submitter.aws import autoscaling as asg_api

    mine = [s for s in states if s["run_id"].startswith(sub.plan.submission_id)
            and s.get("state") not in tracking.TERMINAL]
    if not mine:
        return []
    group = asg_api.group(aws.client("autoscaling"), sub.plan.names.group)
    if group is None or group["DesiredCapacity"] > 0 or capacity.live_instances(aws, sub.plan.submission_id):
        return []
    reports = [s3.get_json(o["Key"]) for o in s3.objects(where.submission(sub.plan.submission_id) + "instances/")]
    reasons = [r.get("reason") for r in reports if r and r.get("reason")]
    reason = f"no worker left: {reasons[-1]}" if reasons else "no worker left (every instance exited)"
    marked = []
    for st in mine:
        st = {**st, "state": "failed", "reason": reason}
        s3.put_json(where.run(st["run_id"]) + "status.json", st)
        marked.append(st)
    return marked

