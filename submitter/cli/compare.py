"""Comparing the runs of a sweep: `compare`."""

from __future__ import annotations

import typer

from submitter.cli import ids
from submitter.cli.base import print_json


def compare(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="JOB (its latest submission), SUBMISSION or RUN id."),
    sort: str = typer.Option(None, "--sort", metavar="METRIC[:min|:max]",
                             help="Best first by this metric (or runtime_s, cost, attempts, interruptions); "
                                  "default: the first metric. Lower is better for names like loss, error, "
                                  "time, cost; higher otherwise."),
    as_json: bool = typer.Option(False, "--json", help="{\"runs\": [...]}: every row with its curves and timeline."),
    as_csv: bool = typer.Option(False, "--csv", help="One line per run: sweep.NAME and metric.NAME columns."),
) -> None:
    """One row per run: swept values, final metrics, runtime, attempts and interruptions, cost; best first."""
    from submitter import compare as compare_mod
    from submitter import tracking
    from submitter.cli.tracking import _tracking
    from submitter.errors import UsageError

    if as_json and as_csv:
        raise UsageError("submitter compare", "--json and --csv were both given", "keep one of them")
    ids.target(target)
    _, s3, where = _tracking(ctx)
    rows = compare_mod.gather(s3, where, tracking.resolve(s3, where, target))
    key = compare_mod.sort_key(rows, sort)
    rows = compare_mod.order(rows, sort)
    if as_json:
        print_json({"runs": rows, "sort": {"metric": key[0], "direction": key[1]} if key else None})
    elif as_csv:
        typer.echo(compare_mod.to_csv(rows), nl=False)
    else:
        from submitter import render

        render.comparison(rows, key)
