"""Reading and ending runs from S3 and tags: `status`, `logs`, `results`, `cancel`, `cost`,
`prices`, `gc`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from submitter.cli import ids
from submitter.cli.base import print_json, say, settings_of
from submitter.settings import Settings


def status(
    ctx: typer.Context,
    target: str = typer.Argument(None, help="JOB, SUBMISSION or RUN id; default: recent submissions."),
    as_json: bool = typer.Option(False, "--json"),
    all_: bool = typer.Option(False, "--all", help="Include finished submissions."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw the table until every run has ended (Ctrl-C "
                               "stops watching), then print it."),
    every: float = typer.Option(5.0, "--every", metavar="S", help="Seconds between redraws with --watch."),
    detail: bool = typer.Option(False, "--detail", help="Read every run's status document, not the run index."),
) -> None:
    """Runs and their state, instance, price and cost so far."""
    import math

    from submitter import status_index, tracking
    from submitter.contract import checkpoint_age_s
    from submitter.errors import UsageError

    if watch and as_json:
        raise UsageError("submitter status", "--watch draws a live table, which --json cannot carry",
                         "drop --watch for one JSON reading, or use `submit --wait` to wait in a script")
    if not (math.isfinite(every) and every > 0):
        raise UsageError("--every", f"{every} is not a positive number of seconds", "e.g. --every 5")
    if target:
        ids.target(target)
    settings, s3, where = _tracking(ctx)
    if target:
        run_ids = tracking.resolve(s3, where, target)
    else:
        subs = tracking.submissions(s3, where)
        run_ids = [r for sub in (subs if all_ else subs[-5:]) for r in tracking.runs_of(s3, where, sub)]
    if watch:
        from submitter import render
        from submitter import watch as watch_mod

        say(f"watching {len(run_ids)} run(s), every {every:g} s, until all have ended (Ctrl-C stops watching)")
        with render.watching() as live:
            states = watch_mod.until_ended(lambda: status_index.statuses(s3, where, run_ids, detail=detail),
                                           lambda now: render.statuses(now, live), every)
        render.statuses(states)
        return
    states = status_index.statuses(s3, where, run_ids, detail=detail)
    if not all_ and not target:
        from submitter import contract

        states = [st for st in states if st.get("state") not in tracking.TERMINAL  # and runs kept now (docs/keep.md)
                  or contract.kept_window(contract.Status.from_json(st))] or states
    for st in states:  # derived, like the table's column: how old the run's last complete checkpoint is
        age = checkpoint_age_s(st)
        if age is not None:
            st["checkpoint_age_s"] = age
    if as_json:
        print_json({"runs": states})
        return
    from submitter import render

    render.statuses(states)
    if status_index.from_index(states):
        say(f"{status_index.from_index(states)} settled run(s) shown from the run index; --detail reads their "
            "status documents (reasons, timeline)")


def _tracking(ctx: typer.Context) -> tuple[Settings, Any, Any]:
    from submitter import connect, tracking
    from submitter.aws.s3 import S3
    from submitter.errors import SettingsError

    settings = connect.resolve(settings_of(ctx))
    if not settings.bucket:
        raise SettingsError("SUBMITTER_BUCKET", "no bucket is set", "set SUBMITTER_BUCKET, or run `submitter init`")
    aws = connect.aws(settings)
    return settings, S3.connect(aws, settings.bucket), tracking.Where(settings.bucket, settings.prefix)


def logs(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="RUN id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new output until the run ends."),
    agent: bool = typer.Option(False, "--agent", help="The agent's log for the run (pull, restore, uploads)."),
) -> None:
    """A run's container log (or its agent log), from S3 (no SSH needed)."""
    from submitter import tracking

    ids.run(run)
    _, s3, where = _tracking(ctx)
    tracking.print_logs(s3, where, run, sys.stdout, follow=follow, agent=agent, say=say)


def results(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="RUN, SUBMISSION or JOB (its latest submission)."),
    dest: Path = typer.Option(None, "--dest", help="Download directory; default ./results/<run-id>/."),
) -> None:
    """Download a run's outputs from S3."""
    from submitter import tracking

    ids.target(target)
    _, s3, where = _tracking(ctx)
    run_ids = tracking.resolve(s3, where, target)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("downloading", total=None)
        done = tracking.download_results(
            s3, where, run_ids, dest,
            on_start=lambda files, size: bar.update(task, total=size, description=f"{files} file(s)"),
            on_bytes=lambda n: bar.advance(task, n))
    for root in done.roots:
        files = sum(1 for p in root.rglob("*") if p.is_file() and not p.name.endswith(".part"))
        typer.echo(f"{root}: {files} file(s)")
    say(f"fetched {done.fetched} file(s) ({done.bytes} bytes), skipped {done.skipped} identical")


def cancel(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="RUN or SUBMISSION id."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json"),
    wait_s: float = typer.Option(600.0, "--timeout", help="Seconds to wait for running runs to stop and upload."),
) -> None:
    """Stop runs gracefully (outputs uploaded), drop queued ones, terminate their instances."""
    from submitter import cancel as cancel_mod
    from submitter import connect
    from submitter.errors import UsageError

    if not yes and not sys.stdin.isatty():
        raise UsageError("submitter cancel", "not confirmed (no terminal to ask on)",
                         f"run `submitter cancel {target} --yes`")
    ids.run_or_submission(target)
    settings, s3, where = _tracking(ctx)
    scope = cancel_mod.scope(s3, where, target)
    if not yes and not typer.confirm(f"cancel {scope.describe()}?"):
        raise typer.Exit(1)
    result = cancel_mod.cancel(connect.aws(settings), s3, where, scope, say, wait_s=wait_s)
    if as_json:
        print_json(result)
        return
    for st in result["runs"]:
        typer.echo(f"{st['run_id']}: {st.get('state')}" + (f" ({st['reason']})" if st.get("reason") else ""))
    if result.get("kept_ended"):
        typer.echo(f"kept window ended early: instance(s) {', '.join(result['kept_ended'])} terminated")
    if result["removed"]:
        typer.echo(f"removed: {', '.join(result['removed'])}")


def cost(
    ctx: typer.Context,
    target: str = typer.Argument(None, help="SUBMISSION (or RUN, JOB) id; default: submissions since --since."),
    since: str = typer.Option(None, "--since", help="DATE (YYYY-MM-DD, UTC); default: the last 7 days."),
    month: str = typer.Option(None, "--month", help="YYYY-MM (UTC): that month's ledger against SUBMITTER_BUDGET, "
                              "per submission."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What runs cost: spot price history x runtime, plus EBS; savings against on-demand. Without a SUBMISSION,
    also this month's ledger against SUBMITTER_BUDGET."""
    from datetime import datetime, timedelta, timezone

    from submitter import connect, tracking
    from submitter.aws import ec2 as ec2_api
    from submitter.errors import UsageError

    if target and since:
        raise UsageError("submitter cost", "give a SUBMISSION or --since, not both", "drop one of them")
    if month is not None:
        return _month(ctx, month, bool(target or since), as_json)
    try:
        start = (datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=timezone.utc) if since
                 else datetime.now(timezone.utc) - timedelta(days=7))
    except ValueError:
        raise UsageError("--since", f"{since!r} is not a date", "use YYYY-MM-DD, e.g. --since 2026-11-01") from None
    if target:
        ids.target(target)
    settings, s3, where = _tracking(ctx)
    run_ids = (tracking.resolve(s3, where, target) if target else
               [r for sub in tracking.submissions_since(s3, where, start) for r in tracking.runs_of(s3, where, sub)])
    ec2 = ec2_api.client(connect.aws(settings))
    report = tracking.costs(s3, where, run_ids, lambda t, az, lo, hi: ec2_api.price_history(ec2, t, az, lo, hi),
                            settings.region)
    if not target:  # the month so far against the budget, under the period's table
        from submitter import budget, contract

        report["month"] = budget.month_report(s3, where.layout, contract.month_of(), settings.budget)
    if as_json:
        print_json(report)
        return
    from submitter import render

    render.costs(report)
    if "month" in report:
        typer.echo(render.month_line(report["month"]))


def _month(ctx: typer.Context, month: str, other: bool, as_json: bool) -> None:
    from submitter import budget, contract
    from submitter.errors import UsageError

    if other:
        raise UsageError("submitter cost", "give --month alone (not with a SUBMISSION or --since)", "drop one")
    if not contract.is_month(month):
        raise UsageError("--month", f"{month!r} is not a month", "use YYYY-MM, e.g. --month 2026-11")
    settings, s3, where = _tracking(ctx)
    report = budget.month_report(s3, where.layout, month, settings.budget)
    if as_json:
        print_json(report)
        return
    from submitter import render

    render.month(report)


def prices(
    ctx: typer.Context,
    types: list[str] = typer.Argument(..., help="Instance types, e.g. g4dn.xlarge."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per pool (type x AZ): spot price, placement score, interruption band, our observed rate, expected $/useful-h."""
    from submitter import connect, tracking
    from submitter.errors import CapacityError
    from submitter.placement import prices as pool_prices
    from submitter.placement.lookup import market_for

    settings = connect.resolve(settings_of(ctx))
    market = market_for(settings, types)
    if market.prices is None:
        raise CapacityError(f"prices {' '.join(types)}", market.note,
                            "set AWS credentials (or start the sandbox: `submitter --sandbox sandbox up`)")
    offers = pool_prices.rows(market, tracking.prices(market.prices, settings.region), settings.region)
    missing = sorted(set(types) - {o["instance_type"] for o in offers})
    if not offers:
        raise CapacityError(f"prices {' '.join(types)}", f"no spot price in {settings.region} for these types",
                            "check the type names (e.g. g4dn.xlarge), or set SUBMITTER_REGION")
    source = "sandbox price table, NOT LIVE" if settings.sandbox else "live spot price history"
    if as_json:
        print_json({"region": settings.region, "source": source, "offers": offers, "not_offered": missing,
                    "notes": market.notes, "basis": pool_prices.basis()})
        return
    from submitter import render

    render.prices(offers, f"{settings.region}, {source}", market.notes + [pool_prices.basis()])
    if missing:
        typer.echo(f"no spot offer for: {', '.join(missing)}")


def gc(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Find and remove orphaned resources tagged by submitter."""
    from submitter import connect
    from submitter import gc as gc_mod
    from submitter.errors import UsageError

    settings, s3, where = _tracking(ctx)
    aws = connect.aws(settings)
    orphans = gc_mod.find(aws, s3, where, cache_max_age_days=settings.cache_max_age_days)
    if not as_json:
        for o in orphans:
            typer.echo(f"{o.kind:15} {o.id:45} {o.submission}: {o.why}")
    if not orphans:
        if as_json:
            print_json({"found": [], "removed": []})
        else:
            typer.echo("nothing to remove: no orphaned resource tagged by submitter")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("submitter gc", "not confirmed (no terminal to ask on)", "run `submitter gc --yes`")
        if not typer.confirm(f"remove these {len(orphans)} resource(s)?"):
            raise typer.Exit(1)
    removed = gc_mod.remove(aws, orphans, say)
    if as_json:
        print_json({"found": [o.to_json() for o in orphans], "removed": [o.to_json() for o in removed]})
    else:
        typer.echo(f"removed {len(removed)} of {len(orphans)}")
    if len(removed) < len(orphans):
        raise typer.Exit(1)
