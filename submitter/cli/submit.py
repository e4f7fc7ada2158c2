"""`submitter submit`: validate, plan (or print the plan), build and push, hand to the backend;
optionally wait or follow."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from submitter import contract
from submitter.cli import ids
from submitter.cli.base import print_json, say, settings_of


def submit(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="Job spec files (YAML).", show_default=False),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop: nothing is built or created."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    wait: bool = typer.Option(False, "--wait", help="Block until every run ends; exit 1 if any failed."),
    follow: bool = typer.Option(False, "--follow", help="Like --wait, and stream the logs."),
    submission: str = typer.Option(None, "--id", help="Re-use a submission id: retry a cut-short submit; "
                                   "nothing is created twice."),
    ssh_key: str = typer.Option(None, "--ssh-key", help="EC2 key pair for the instances, so `ssh`/`notebook` can "
                                "log in (default SUBMITTER_SSH_KEY; none: no key)."),
    backend: str = typer.Option(None, "--backend", help="pool (spot workers of your own) or batch (AWS Batch); "
                                "default: each spec's resources.backend."),
    keep_on_failure: str = typer.Option(None, "--keep-on-failure", metavar="DURATION",
                                        help="Keep a failed run's instance this long (e.g. 20m) for `submitter ssh`; "
                                        "overrides limits.keep_on_failure; 0 keeps nothing. Pool backend only."),
    budget_mode: str = typer.Option("worst", "--budget-mode", help="What SUBMITTER_BUDGET counts of this "
                                    "submission: worst (every run to its limits) or expected (the expected cost's "
                                    "upper end, where the plan estimates one)."),
) -> None:
    """Submit one or more job specs: build, push, stage, launch spot workers."""
    from submitter import connect
    from submitter import plan as planning
    from submitter import spec as spec_mod

    if submission is not None:
        ids.submission(submission)
    if budget_mode not in ("worst", "expected"):
        from submitter.errors import UsageError

        raise UsageError("--budget-mode", f"{budget_mode!r} is not a budget mode", "use worst or expected")
    settings = connect.resolve(settings_of(ctx))
    if ssh_key:
        from dataclasses import replace

        settings = replace(settings, ssh_key=ssh_key)
    specs = spec_mod.load_many(files)
    if keep_on_failure is not None or any(s.spec.limits.keep_on_failure for s in specs):
        from submitter import keep

        specs = keep.override(specs, keep_on_failure)
        keep.check_backend(specs, backend)
    if submission is not None:
        for loaded in specs:  # before any AWS call: the id must be one of this job's
            planning.check_submission(loaded.spec.name, submission)
    if dry_run:
        from submitter import backends, plan_limits

        plans = [planning.make_plan(s, settings, planning.lookup_prices(s, settings), submission=submission,
                                    backend=backend) for s in specs]
        for p in plans:
            plan_limits.check(p)  # the refusal a real submit would meet, before anything is created
        budget = None
        if settings.budget is not None:  # offline: the check without the month's spend
            from submitter import budget as budget_mod

            budget = budget_mod.check(settings.budget, plans, budget_mode, None)
        if as_json:
            shown = [{**backends.dry_run(p), **({"budget": budget.to_json()} if budget else {})} for p in plans]
            print_json(shown[0] if len(shown) == 1 else shown)
        else:
            from submitter import render

            for p in plans:
                render.plan(p)
            if budget is not None:
                typer.echo(budget.describe())
        return
    from submitter import execute, image, progress

    aws = connect.aws(settings)
    view = progress.for_stream(as_json=as_json)
    submitted = execute.submit(aws, settings, specs, os.environ, Path.cwd(), view, image.engine, submission, backend,
                               budget_mode=budget_mode)
    summary = [{"submission_id": s.plan.submission_id, "job": s.plan.job, "image": s.image_uri,
                "runs": [r.run_id for r in s.plan.runs], **s.image_facts} for s in submitted]
    if as_json and not (wait or follow):
        print_json(summary)
    elif not as_json:
        for s in submitted:
            typer.echo(f"submission {s.plan.submission_id}: {len(s.plan.runs)} run(s)")
            for r in s.plan.runs:
                typer.echo(f"  {r.run_id}")
            typer.echo(f"  follow with: submitter status {s.plan.submission_id}"
                       f"{' --sandbox' if settings.sandbox else ''}")
    if wait or follow:
        states = execute.wait(aws, settings, submitted, follow, say)
        if as_json:
            print_json({"submissions": summary, "runs": states})
        failed = [st for st in states if st.get("state") != contract.SUCCEEDED]
        if failed:
            raise typer.Exit(1)
