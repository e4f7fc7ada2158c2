"""`submitter rerun` (a recorded run again, from its record alone) and `submitter diff` (two runs compared)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from submitter import contract
from submitter.cli import ids
from submitter.cli.base import print_json, say, settings_of


def rerun(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="RUN id to reproduce."),
    set_: list[str] = typer.Option([], "--set", help="NAME=VALUE: replace one of the run's env or sweep values "
                                   "(repeatable); the new run's record says so."),
    instance_types: list[str] = typer.Option([], "--instance-types", help="Run on these types instead "
                                             "(comma-separated or repeated); the new run's record says so."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the record and print the plan: nothing is "
                                 "created."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    wait: bool = typer.Option(False, "--wait", help="Block until the run ends; exit 1 if it failed."),
    follow: bool = typer.Option(False, "--follow", help="Like --wait, and stream the logs."),
) -> None:
    """Submit a recorded run again, byte for byte: its image digest, command, env, sweep values, inputs, limits."""
    from submitter import connect, image, progress
    from submitter import rerun as rerun_mod
    from submitter.errors import SettingsError

    ids.run(run)
    sets = rerun_mod.parse_sets(set_)
    types = [t.strip() for item in instance_types for t in item.split(",") if t.strip()] or None
    settings = connect.resolve(settings_of(ctx))
    if not settings.bucket:
        raise SettingsError("SUBMITTER_BUCKET", "no bucket is set",
                            "set SUBMITTER_BUCKET to the bucket the run was submitted to")
    aws = connect.aws(settings)
    view = progress.for_stream(as_json=as_json)
    prepared = rerun_mod.prepare(aws, settings.bucket, settings.prefix, run, sets, types, view)
    for text in prepared.warnings:
        say(f"warning: {text}")
    about = {"reproduces": run, "overrides": prepared.overrides, "warnings": prepared.warnings}
    if dry_run:
        _dry_run(settings, prepared, about, as_json)
        return
    from submitter import execute

    submitted = execute.submit(aws, settings, [prepared.loaded], os.environ, Path.cwd(), view, image.engine,
                               None, prepared.loaded.spec.resources.backend)
    summary = [{"submission_id": s.plan.submission_id, "job": s.plan.job, "image": s.image_uri,
                "runs": [r.run_id for r in s.plan.runs], **about} for s in submitted]
    if as_json and not (wait or follow):
        print_json(summary[0])
    elif not as_json:
        for s in submitted:
            typer.echo(f"submission {s.plan.submission_id}: reproduces {run}")
            for r in s.plan.runs:
                typer.echo(f"  {r.run_id}")
            typer.echo(f"  compare with: submitter diff {run} {s.plan.runs[0].run_id}"
                       f"{' --sandbox' if settings.sandbox else ''}")
    if wait or follow:
        states = execute.wait(aws, settings, submitted, follow, say)
        if as_json:
            print_json({**summary[0], "states": states})
        if any(st.get("state") != contract.SUCCEEDED for st in states):
            raise typer.Exit(1)


def _dry_run(settings: Any, prepared: Any, about: dict[str, Any], as_json: bool) -> None:
    from submitter import backends, plan_limits
    from submitter import plan as planning

    loaded = prepared.loaded
    p = planning.make_plan(loaded, settings, planning.lookup_prices(loaded, settings),
                           backend=loaded.spec.resources.backend)
    plan_limits.check(p)  # the refusal a real rerun would meet, before anything is created
    if as_json:
        print_json({**backends.dry_run(p), "rerun": about})
        return
    from submitter import render

    spec = loaded.spec
    typer.echo(f"rerun of {prepared.run_id}")
    typer.echo(f"  image:   {spec.image.uri}  (recorded digest; nothing is built)")
    typer.echo(f"  command: {spec.command}")
    for run in p.runs:
        typer.echo(f"  env:     {' '.join(f'{k}={v}' for k, v in sorted(run.env.items())) or '-'}")
    for item in spec.inputs:
        typer.echo(f"  input:   {item.source} -> {item.target}")
    for name, change in (about["overrides"].get("env") or {}).items():
        typer.echo(f"  --set {name}={change['now']} (the run had {change['was']})")
    if "instance_types" in about["overrides"]:
        typer.echo(f"  --instance-types {','.join(about['overrides']['instance_types']['now'])}")
    render.plan(p)


def diff(
    ctx: typer.Context,
    run_a: str = typer.Argument(..., help="RUN id."),
    run_b: str = typer.Argument(..., help="RUN id to compare it with."),
    as_json: bool = typer.Option(False, "--json", help="Every field of both runs, machine-readable."),
    all_: bool = typer.Option(False, "--all", help="Show the fields that are the same too."),
) -> None:
    """What differed between two runs, field by field, and whether they were the same experiment."""
    from submitter import connect
    from submitter import diff as diff_mod
    from submitter.aws.s3 import S3
    from submitter.errors import SettingsError

    ids.run(run_a, "RUN_A")
    ids.run(run_b, "RUN_B")
    settings = connect.resolve(settings_of(ctx))
    if not settings.bucket:
        raise SettingsError("SUBMITTER_BUCKET", "no bucket is set", "set SUBMITTER_BUCKET, or run `submitter init`")
    s3 = S3.connect(connect.aws(settings), settings.bucket)
    layout = contract.Layout(settings.prefix)
    result = diff_mod.compare(diff_mod.read_side(s3, layout, run_a), diff_mod.read_side(s3, layout, run_b))
    if as_json:
        print_json(result)
        return
    for line in diff_mod.lines(result, everything=all_):
        typer.echo(line)
