"""`report`: one self-contained HTML page comparing a job's or a submission's runs (submitter/report.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from submitter.cli import ids
from submitter.cli.base import say


def report(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="JOB (its latest submission), SUBMISSION or RUN id."),
    output: str = typer.Option(None, "--output", "-o", metavar="FILE",
                               help="Where to write the page; `-` for stdout. Default: ./report-TARGET.html."),
    sort: str = typer.Option(None, "--sort", metavar="METRIC[:min|:max]",
                             help="Best first by this metric, as `compare --sort` (default: the first metric)."),
) -> None:
    """An HTML report (opens offline): comparison table, a chart per metric, cost, runtime, attempts."""
    from datetime import datetime, timezone

    from submitter import compare, tracking
    from submitter import report as report_mod
    from submitter.cli.tracking import _tracking

    ids.target(target)
    path = None if output == "-" else Path(output or f"report-{target}.html")
    if path is not None:
        _check_writable(path)
    _, s3, where = _tracking(ctx)
    run_ids = tracking.resolve(s3, where, target)
    rows = compare.order(compare.gather(s3, where, run_ids), sort)
    page = report_mod.render(rows, f"{target}: {len(rows)} run(s)", datetime.now(timezone.utc))
    if path is None:
        sys.stdout.write(page)
        return
    path.write_text(page, encoding="utf-8")
    going = sum(1 for r in rows if not report_mod.ended(r))
    typer.echo(f"{path.resolve()}: {len(rows)} run(s), {len(report_mod.chart_ids(rows))} chart(s)"
               + (f"; {going} still going, so partial: run it again later" if going else ""))
    say("open it in any browser; it needs no network")


def _check_writable(path: Path) -> None:
    """Refused before anything is read: a page that cannot be written would be gathered for nothing."""
    from submitter.errors import UsageError

    if path.is_dir():
        raise UsageError("--output", f"{path} is a directory", f"give a file name, e.g. -o {path / 'report.html'}")
    if not path.parent.is_dir():
        raise UsageError("--output", f"the directory {path.parent} does not exist",
                         "create it first, or give a path in an existing directory")
