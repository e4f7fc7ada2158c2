"""Submit for real: plan -> image -> the plan's backend, then optionally wait and clean up.

`--dry-run` is this pipeline with the executor left out (cli.py prints the plan instead).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitter import backends, contract, plan_limits, status_index, tracking
from submitter import settings as settings_mod
from submitter.aws import s3 as s3_api
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

    @property
    def backend(self) -> backends.Backend:
        return backends.for_plan(self.plan)


def account_id(aws: Aws) -> str:
    return aws.account()


def prices(aws: Aws, loaded: LoadedSpec, settings: Settings | None = None) -> PriceLookup:
    from submitter.placement.lookup import market
    from submitter.plan import target_capacity

    return market(aws, loaded.spec.resources.instance_types, sandbox=bool(aws.endpoint_url), job=loaded.spec.name,
                  target_capacity=target_capacity(loaded.spec), settings=settings)


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
    budget_mode: str = "worst",
) -> list[Submitted]:
    """Validate everything that can fail on the user's side first, then build, and hand each plan to its backend.

    `backend` (pool | batch) overrides each spec's resources.backend; `budget_mode` (worst | expected) is what
    the monthly budget counts of the new submissions."""

    if backend is not None:
        backends.get(backend)  # an unknown name fails here, before anything is built
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
        plan = make_plan(loaded, settings, prices(aws, loaded, settings), account=account, submission=submission,
                         backend=backend)
        backends.for_plan(plan).describe(plan)  # the backend's part is checked too, before anything is built
        plan_limits.check(plan)  # and AWS's limits on what it will create
        plan_limits.check_secret_values(secrets)
        planned.append((plan, secrets))
    if settings.budget is not None:  # the month's ledger against SUBMITTER_BUDGET, before anything is built
        from submitter import budget as budget_mod

        month = contract.month_of()
        spent = budget_mod.month_spend(S3.connect(aws, settings.bucket), contract.Layout(settings.prefix), month)
        budget_mod.refuse(budget_mod.check(settings.budget, [p for p, _ in planned], budget_mode, spent))
    # Every image before any launch: a failing build of the second spec must not leave the first running.
    images = ensure_images(aws, settings, [p for p, _ in planned], progress, engine)
    done = []
    for (plan, secrets), result in zip(planned, images, strict=True):
        if plan.backend == "pool":  # the data volume starts from the image's warm cache, if `submitter cache` made one
            from submitter import cache as cache_mod

            plan = cache_mod.attach(aws, plan, result.digest, progress)
        backends.for_plan(plan).submit(aws, plan, result.uri_with_digest, secrets, progress)
        done.append(Submitted(plan, result.uri_with_digest, {
            "built": result.built, "pushed": result.pushed, "bytes_pushed": result.bytes_pushed,
            "layers_pushed": result.layers_pushed, "digest": result.digest}))
    return done


def ensure_images(aws: Aws, settings: Settings, plans: list[Plan], progress: Progress,
                  engine: Callable[[], Any]) -> list[Any]:
    """Each plan's image built and pushed where missing (or the prebuilt one checked): its image.ImageResult."""
    from submitter import image as image_mod
    from submitter.aws.ecr import TokenCache

    cache = TokenCache(settings.home / "cache")
    docker_client = None
    images = []
    for plan in plans:
        spec = plan.spec
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
    return images


def _check_bucket(aws: Aws, bucket: str) -> None:
    problem = s3_api.bucket_problem(s3_api.client(aws, bucket), bucket)
    if problem == "foreign":  # runs, documents and the runtime would go to (and come from) someone else's bucket
        raise SettingsError(
            f"SUBMITTER_BUCKET={bucket}",
            f"the bucket is not owned by this AWS account ({aws.account()}), or this identity may not use it",
            "set SUBMITTER_BUCKET to a bucket of this account, or run `submitter init` to create one",
        )
    if problem is not None:
        raise SettingsError(
            f"SUBMITTER_BUCKET={bucket}",
            "the bucket does not exist" if problem == "missing" else f"the bucket is not usable ({problem})",
            "run `submitter init` to create it, or fix SUBMITTER_BUCKET",
        )


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
    s3 = S3.connect(aws, settings.bucket)
    where = tracking.Where(settings.bucket, settings.prefix)
    run_ids = [r.run_id for s in submitted for r in s.plan.runs]
    seen_state: dict[str, str] = {}
    next_chunk: dict[str, int] = {}
    while True:
        states = tracking.statuses(s3, where, run_ids)
        for st in states:
            label = st.get("state", contract.UNKNOWN)
            if seen_state.get(st["run_id"]) != label:
                seen_state[st["run_id"]] = label
                extra = f" ({st['reason']})" if st.get("reason") and label != contract.SUCCEEDED else ""
                say(f"{st['run_id']}: {label}{extra}")
            if follow:
                next_chunk[st["run_id"]] = tracking.print_new_chunks(
                    s3, where, st["run_id"], next_chunk.get(st["run_id"], 0), sys.stdout)
        if all(st.get("state") in contract.TERMINAL for st in states):
            break
        typed = [contract.Status.from_json(st) for st in states]
        for sub in submitted:
            stranded = sub.backend.stranded(aws, s3, where.layout, sub.plan.submission_id, typed)
            if stranded:
                say(f"{sub.plan.submission_id}: no worker is left for {len(stranded)} run(s): {stranded[0].reason}")
        time.sleep(poll_s)
    status_index.complete(s3, where, states)  # before the roles go: a writer may not have put its last entry
    for sub in submitted:
        removed = sub.backend.clean_up(aws, sub.plan.submission_id)
        if removed:
            say(f"{sub.plan.submission_id}: removed {', '.join(removed)}")
    return states
