"""Human-readable rendering (rich) of plans and tables. Machine-readable output is plain JSON in cli.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from submitter import contract

if TYPE_CHECKING:
    from submitter.plan import Plan


def _console() -> Any:
    """Rich output; when stdout is not a terminal (a pipe, a log), wide enough that tables keep whole ids."""
    import sys

    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def plan(p: Plan) -> None:
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{p.job}[/] ({p.spec_file}) -> submission [bold]{p.submission_id}[/] in {p.region}")
    image = p.image
    if image.get("prebuilt"):
        console.print(f"  image: prebuilt {image['uri']}")
    else:
        console.print(f"  image: build {image['dockerfile']} (context {image['context']}, {image['platform']})")
        console.print(f"         -> {image['uri']}  (skipped if already in the registry)")

    runs = Table(title=f"{len(p.runs)} run(s) on the {p.backend} backend", title_justify="left")
    runs.add_column("run")
    runs.add_column("sweep")
    runs.add_column("results")
    for r in p.runs:
        runs.add_row(r.run_id, " ".join(f"{k}={v}" for k, v in r.sweep.items()) or "-", p.run_uri(r.run_id))
    console.print(runs)

    placement = p.to_json()["placement"]
    if p.placements:
        offers = _pools_table(f"pools the group uses, best expected cost first ({p.price_note})",
                              placement["candidates"][:8], "expected $/run")
        if len(p.placements) > 8:
            offers.add_row("...", f"{len(p.placements) - 8} more", *[""] * 6)
        console.print(offers)
        s = p.strategy
        console.print(f"  group: {s.get('allocation')} over {', '.join(s.get('types') or [])} in "
                      f"{', '.join(s.get('zones') or [])}; pools within {s.get('margin', 0):.0%} of the best kept")
        if s.get("reachable_not_kept"):
            console.print(f"  the group's types x zones also reach {len(s['reachable_not_kept'])} dropped pool(s): "
                          "a group spans its types x zones; risky pools are cut out while another kept pool remains")
        for d in placement["dropped"][:8]:
            console.print(f"  dropped {d['instance_type']}/{d['availability_zone']}: {d['reason']}")
        if len(placement["dropped"]) > 8:
            console.print(f"  ... {len(placement['dropped']) - 8} more dropped (--json lists them)")
        if p.excluded:
            console.print(f"  {len(p.excluded)} offer(s) above max_price left out")
    else:
        console.print(f"  placement: {p.price_note}")
    for note in p.market_notes:
        console.print(f"  [dim]{note}[/]")

    from submitter import backends

    for line in backends.for_plan(p).summary(p):
        console.print(f"  {line}")
    e = p.estimate
    if e.get("total_at_most") not in (None, "unknown"):
        line = f"  cost: at most ${e['total_at_most']:.2f} for {e['runs']} run(s) at ${e['spot_price_per_hour']}/h"
        if e.get("on_demand_total"):
            line += f" (on-demand would be ${e['on_demand_total']:.2f})"
    elif e.get("total_at_most_at_max_price") is not None:
        line = f"  cost: unknown spot price; at most ${e['total_at_most_at_max_price']:.2f} at max_price"
    else:
        line = "  cost: unknown (no spot prices and no max_price)"
    console.print(line)
    expected = e.get("expected") or {}
    if expected.get("hours_high") is not None or expected.get("hours_low") is not None:
        cost = (f"${expected['cost_low']:.2f} to {_money(expected.get('cost_high'), 2)}"
                if expected.get("cost_low") is not None else "cost unknown")
        console.print(f"  expected: {cost}, {_hours(expected.get('hours_low'))} to "
                      f"{_hours(expected.get('hours_high'))} for {expected.get('runs')} run(s) in "
                      f"{expected.get('waves')} wave(s), counting start, end and restarts, which the worst case "
                      f"above leaves out; over {expected.get('basis')}")
        for name, figure in (expected.get("inputs") or {}).items():
            if name in ("runtime_hours", "interruption_rate", "checkpoint_hours"):
                console.print(f"    {name}: {figure['value']} ({figure['source']})")
    for w in p.warnings:
        console.print(f"  [yellow]warning:[/] {w}")
    console.print("  dry run: nothing was built or created")


def statuses(states: list[dict], live: Any = None) -> None:
    """The status table, printed; or, given the live view of `watching()`, drawn in it in place."""
    from rich.table import Table

    table = Table()
    for column in ("run", "state", "instance", "AZ/type", "$/h", "runtime", "cost", "checkpoint"):
        table.add_column(column)
    from submitter import keep

    for st in states:
        kept = keep.describe(st)  # a failed run's instance kept for `submitter ssh` (docs/keep.md)
        table.add_row(
            st.get("run_id", "?"),
            st.get("state", contract.UNKNOWN) + (f" ({st['reason']})" if st.get("reason")
                                                 and st.get("state") != contract.SUCCEEDED
                                          else "") + (f"; {kept}" if kept else ""),
            st.get("instance_id") or "-",
            f"{st.get('availability_zone') or '-'}/{st.get('instance_type') or '-'}",
            f"{st['price']:.4f}" if isinstance(st.get("price"), (int, float)) else "-",
            _runtime(st),
            f"${st['cost']:.4f}" if isinstance(st.get("cost"), (int, float)) else "-",
            _checkpoint_age(st),
        )
    if live is not None:
        live.update(table, refresh=True)
        return
    _console().print(table)
    from rich.markup import escape

    for st in states:  # the note may quote a file name the job chose: escaped, never taken for markup
        for what in ("checkpoint_warning", "checkpoint_note"):
            if st.get(what) and st.get("state") not in (contract.SUCCEEDED, contract.CANCELLED):
                _console().print(f"[yellow]{escape(str(st.get('run_id', '?')))}:[/] {escape(str(st[what]))}",
                                 highlight=False)


def _checkpoint_age(st: dict) -> str:
    """`4m ago` (with `!` when the run warns that the job stopped checkpointing); `-` without a checkpoint."""
    seconds = st.get("checkpoint_age_s")
    if not isinstance(seconds, int):
        return "none !" if st.get("checkpoint_warning") else "-"
    age = f"{seconds}s" if seconds < 120 else f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"
    return f"{age} ago" + (" !" if st.get("checkpoint_warning") else "")


def watching() -> Any:
    """The live view of `status --watch`: redrawn in place, cleared at the end (the final table is printed)."""
    from rich.live import Live

    return Live(console=_console(), transient=True, auto_refresh=False)


def _runtime(st: dict) -> str:
    from submitter import contract

    start = contract.parse_iso(st.get("started_at"))
    end = contract.parse_iso(st.get("ended_at") or st.get("heartbeat_at") or contract.iso())
    if start is None or end is None:
        return "-"
    seconds = int((end - start).total_seconds())
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _money(value: object, digits: int = 4) -> str:
    return f"${value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def _share(value: object) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else "-"


def costs(report: dict) -> None:
    from rich.table import Table

    table = Table()
    for column in ("run", "state", "AZ/type", "hours", "spot $/h", "spot", "EBS", "total", "on-demand", "saving"):
        table.add_column(column)
    for r in report["runs"]:
        table.add_row(
            r["run_id"], str(r.get("state")), f"{r.get('availability_zone') or '-'}/{r.get('instance_type') or '-'}",
            f"{r['hours']:.3f}", _money(r.get("spot_price")), _money(r.get("spot_cost")), _money(r.get("ebs_cost")),
            _money(r.get("total")), _money(r.get("on_demand_cost")), _share(r.get("savings")),
        )
    t = report["total"]
    table.add_row("total", f"{t['priced']}/{t['runs']} priced", "", "", "", "", "", _money(t["total"]),
                  _money(t.get("on_demand_total")), _share(t.get("savings")))
    console = _console()
    console.print(table)
    console.print(f"  {t['basis']}")


def prices(offers: list[dict], note: str, notes: list[str] | None = None) -> None:
    table = _pools_table(f"spot pools ({note}), cheapest first", offers, "expected $/useful-h")
    console = _console()
    console.print(table)
    for line in notes or []:
        console.print(f"  {line}")


def _pools_table(title: str, pools: list[dict], expected_column: str) -> Any:
    """One row per pool: the four figures (price, score, band, our record) and the expected cost."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("type", "AZ", "spot $/h", "saving", "score", "band", "ours", expected_column):
        table.add_column(column)
    for o in pools:
        band, ours = o.get("band"), o.get("observed")
        expected = o.get("expected_cost") or o.get("expected_per_useful_hour")
        table.add_row(
            o["instance_type"], o["availability_zone"], f"{o['spot_price']:.4f}", _share(o.get("savings")),
            f"{o['score']}/10" if o.get("score") is not None else "-",
            band["label"] if band else "-",
            f"{ours['interruptions']} in {ours['instance_hours']:.1f} h" if ours else "-",
            _range(expected),
        )
    return table


def _range(expected: dict | None) -> str:
    """low-high in $, "unbounded" where the expectation has no finite value (JSON null)."""
    if not expected:
        return "-"
    low, high = (_money(expected[k]) if expected[k] is not None else "unbounded" for k in ("low", "high"))
    return f"{low}-{high}"


def _hours(value: object) -> str:
    return f"{value:.2f} h" if isinstance(value, (int, float)) else "unbounded"


def comparison(rows: list[dict], key: tuple[str, str] | None, most: int = 6) -> None:
    """`compare`'s table: the swept values, the first `most` metrics (the sort metric among them), then runtime,
    attempts/interruptions and cost."""
    from rich.table import Table

    from submitter import compare

    metrics = compare.metric_names(rows)
    if key and key[0] in metrics:
        metrics = [key[0]] + [m for m in metrics if m != key[0]]
    shown, hidden = metrics[:most], metrics[most:]
    sweeps = compare.sweep_names(rows)
    title = (f"{len(rows)} run(s), best first by {key[0]} ({'lower' if key[1] == 'min' else 'higher'} is better)"
             if key else f"{len(rows)} run(s); no metrics yet")
    table = Table(title=title, title_justify="left")
    for column in ("run", "state", *sweeps, *shown, "runtime", "attempts (interrupted)", "cost"):
        table.add_column(column)
    for r in rows:
        state = r["state"] + (f" ({r['reason']})" if r.get("reason") and r["state"] != contract.SUCCEEDED else "")
        runtime = r.get("runtime_s")
        table.add_row(
            r["run_id"], state, *(str((r.get("sweep") or {}).get(n, "-")) for n in sweeps),
            *(_metric((r.get("metrics") or {}).get(n)) for n in shown),
            f"{int(runtime) // 3600}:{int(runtime) % 3600 // 60:02d}:{int(runtime) % 60:02d}" if runtime is not None
            else "-", f"{r.get('attempts', 0)} ({r.get('interruptions', 0)})", _money(r.get("cost")))
    console = _console()
    console.print(table)
    if hidden:
        console.print(f"  {len(hidden)} more metric(s) with --json or --csv: {', '.join(hidden)}")


def _metric(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def month(report: dict) -> None:
    """`submitter cost --month`: the month's spend per submission, against SUBMITTER_BUDGET."""
    from rich.table import Table

    table = Table(title=f"ledger of {report['month']} (UTC)", title_justify="left")
    for column in ("submission", "runs", "attempts", "cost"):
        table.add_column(column)
    for r in report["submissions"]:
        table.add_row(r["submission_id"], str(r["runs"]), str(r["attempts"]), _money(r["cost"]))
    console = _console()
    if report["submissions"]:
        console.print(table)
    console.print(month_line(report))
    console.print(f"  {report['basis']}")


def month_line(report: dict) -> str:
    from submitter.contract import usd

    spent = f"{report['month']}: {usd(report['spent'])} spent"
    if report.get("budget") is None:
        return f"{spent}; no budget (SUBMITTER_BUDGET is not set)"
    state = "REACHED: workers take no new runs" if report["reached"] else f"{usd(report['remaining'])} remaining"
    return f"{spent} of the {usd(report['budget'])} budget ({report['spent'] / report['budget']:.0%}); {state}"
