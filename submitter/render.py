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

    if p.placements:
        offers = Table(title=f"spot offers within max_price ({p.price_note})", title_justify="left")
        for column in ("type", "AZ", "spot $/h", "on-demand $/h", "saving"):
            offers.add_column(column)
        for o in p.placements[:8]:
            offers.add_row(
                o.instance_type, o.availability_zone, f"{o.spot_price:.4f}",
                f"{o.on_demand:.4f}" if o.on_demand else "unknown",
                f"{o.savings:.0%}" if o.savings is not None else "-",
            )
        if len(p.placements) > 8:
            offers.add_row("...", f"{len(p.placements) - 8} more", "", "", "")
        console.print(offers)
        if p.excluded:
            console.print(f"  {len(p.excluded)} offer(s) above max_price left out")
    else:
        console.print(f"  placement: {p.price_note}")

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
    for w in p.warnings:
        console.print(f"  [yellow]warning:[/] {w}")
    console.print("  dry run: nothing was built or created")


def statuses(states: list[dict], live: Any = None) -> None:
    """The status table, printed; or, given the live view of `watching()`, drawn in it in place."""
    from rich.table import Table

    table = Table()
    for column in ("run", "state", "instance", "AZ/type", "$/h", "runtime", "cost"):
        table.add_column(column)
    for st in states:
        table.add_row(
            st.get("run_id", "?"),
            st.get("state", contract.UNKNOWN) + (f" ({st['reason']})" if st.get("reason")
                                                 and st.get("state") != contract.SUCCEEDED
                                          else ""),
            st.get("instance_id") or "-",
            f"{st.get('availability_zone') or '-'}/{st.get('instance_type') or '-'}",
            f"{st['price']:.4f}" if isinstance(st.get("price"), (int, float)) else "-",
            _runtime(st),
            f"${st['cost']:.4f}" if isinstance(st.get("cost"), (int, float)) else "-",
        )
    if live is not None:
        live.update(table, refresh=True)
        return
    _console().print(table)


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


def prices(offers: list[dict], note: str) -> None:
    from rich.table import Table

    table = Table(title=f"spot prices ({note}), cheapest first", title_justify="left")
    for column in ("type", "AZ", "spot $/h", "on-demand $/h", "saving"):
        table.add_column(column)
    for o in offers:
        table.add_row(o["instance_type"], o["availability_zone"], f"{o['spot_price']:.4f}",
                      f"{o['on_demand']:.4f}" if o.get("on_demand") else "unknown", _share(o.get("savings")))
    _console().print(table)
