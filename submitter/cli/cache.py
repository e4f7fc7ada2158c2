"""`submitter cache`: make the job image's warm cache snapshot (docs/image.md), list ours, or drop one."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from submitter.cli.base import print_json, settings_of

if TYPE_CHECKING:
    from submitter.cache.model import Cached


def cache(
    ctx: typer.Context,
    file: Path = typer.Argument(None, help="Job spec file (YAML) whose image to cache.", show_default=False),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what it would launch and the snapshot's costs; "
                                 "nothing is built or created."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    list_: bool = typer.Option(False, "--list", help="List our cache snapshots: age, size, $ per month."),
    drop: str = typer.Option(None, "--drop", metavar="SNAPSHOT", help="Delete this cache snapshot of ours."),
) -> None:
    """Warm image cache: an EBS snapshot holding the job's pulled image, which pool workers start from."""
    from submitter import connect
    from submitter.errors import UsageError

    settings = connect.resolve(settings_of(ctx))
    if list_ or drop:
        if file is not None:
            raise UsageError(str(file), "--list and --drop take no spec file", "run `submitter cache --list` alone")
        from submitter import cache as cache_mod

        aws = connect.aws(settings)
        if drop:
            dropped = cache_mod.drop(aws, settings.bucket, settings.prefix, drop)
            if dropped is None:
                raise UsageError(drop, "is not a cache snapshot of ours (this bucket and prefix)",
                                 "see `submitter cache --list`")
            print_json({"dropped": dropped.to_json()}) if as_json else typer.echo(f"dropped {dropped.describe()}")
            return
        _show(cache_mod.listed(aws, settings.bucket, settings.prefix), as_json)
        return
    if file is None:
        raise UsageError("submitter cache", "no spec file given", "run `submitter cache job.yaml` (or --list)")
    from submitter import plan as planning
    from submitter import spec as spec_mod
    from submitter.cache import model

    loaded = spec_mod.load_many([file])[0]
    if dry_run:
        plan = planning.make_plan(loaded, settings, planning.lookup_prices(loaded, settings), backend="pool")
        shown = model.dry_run(plan)
        print_json(shown) if as_json else typer.echo("\n".join(model.describe(shown)))
        return
    from submitter import execute, image, progress
    from submitter.cache import build

    aws = connect.aws(settings)
    plan = planning.make_plan(loaded, settings, execute.prices(aws, loaded, settings), account=aws.account(),
                              backend="pool")
    done = build.make(aws, settings, plan, progress.for_stream(as_json=as_json), image.engine)
    if as_json:
        print_json(done)
    elif not done["created"]:
        typer.echo(f"warm cache exists already for {done['image']}: {done['snapshot']['snapshot_id']}")
    else:
        typer.echo(f"warm cache {done['snapshot']['snapshot_id']} holds {done['image']}; a pool submit of this "
                   "image starts its workers' data volume from it")


def _show(rows: list[Cached], as_json: bool) -> None:
    now = datetime.now(timezone.utc)
    if as_json:
        print_json([{**c.to_json(), "age_days": _days(c, now)} for c in rows])
        return
    if not rows:
        typer.echo("no warm cache snapshot of ours (`submitter cache SPEC` makes one)")
        return
    for c in rows:
        age = _days(c, now)
        typer.echo(f"{c.snapshot_id:24} {c.job:24} {c.digest[:19]:19} {c.state:9} "
                   f"{'?' if age is None else f'{age:.1f}':>6} d {c.size_gb:>5} GB  <= ${c.monthly_usd:.2f}/month")


def _days(c: Cached, now: datetime) -> float | None:
    age = c.age(now)
    return None if age is None else round(age.total_seconds() / 86400, 2)
