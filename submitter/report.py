"""The HTML report of a job or submission: one self-contained file (plotly's JS inlined once, no network needed
to open it) with the comparison table, a chart per metric, cost and runtime per run, and each run's attempts.

Pure: `render(rows, title, generated_at)` takes the rows of `compare.gather` (see the agreed shape there) and
returns the page. Every string that comes from a run (run ids, sweep values, metric names, instance ids) is
escaped, both in the HTML and in what plotly draws, so a hostile metric name cannot inject script.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

# How an attempt ended -> its colour on the timeline; any other ending is drawn grey under its own name.
ENDINGS = {"succeeded": "#2ca02c", "interrupted": "#ff7f0e", "failed": "#d62728", "cancelled": "#7f7f7f",
           "running": "#1f77b4"}
OTHER_COLOUR = "#bcbd22"
CHART_HEIGHT = 360
_CONFIG = {"displaylogo": False, "responsive": True}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 1200px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.meta, .note { color: #666; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin-top: .5rem; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: left; white-space: nowrap; }
th { white-space: normal; max-width: 14rem; overflow-wrap: anywhere; vertical-align: bottom; }
.wide { overflow-x: auto; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.chart { min-height: 360px; }
"""


def render(rows: list[dict[str, Any]], title: str, generated_at: datetime) -> str:
    """The whole page, as a string. `rows` best first (as `compare.order` returns them)."""
    from plotly.offline import get_plotlyjs

    now = generated_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    going = [r for r in rows if not ended(r)]
    parts = [f"<h1>{_e(title)}</h1>",
             f'<p class="meta">{len(rows)} run(s); generated {_e(now)}'
             + (f"; {len(going)} still going: curves, runtime and cost are partial as of then" if going else "")
             + "</p>"]
    if not rows:
        parts.append('<p class="note">No runs found: nothing to compare or chart.</p>')
    else:
        parts += ["<h2>Comparison</h2>", _table(rows)]
        parts += _metric_charts(rows)
        parts += _bar_charts(rows)
        parts += _timeline(rows, generated_at)
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
            f"<style>{_STYLE}</style>\n<script>{get_plotlyjs()}</script>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def chart_ids(rows: list[dict[str, Any]]) -> list[str]:
    """The element ids of the charts the page has for these rows, in page order (the tests look them up)."""
    ids = [f"chart-metric-{i}" for i, _ in enumerate(_curve_names(rows))]
    ids += [name for name, key in (("chart-cost", "cost"), ("chart-runtime", "runtime_s"))
            if any(_number(r.get(key)) is not None for r in rows)]
    if any(_attempt_span(a, None) for r in rows for a in r.get("timeline") or []):
        ids.append("chart-timeline")
    return ids


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _t(value: Any) -> str:
    """A string for plotly to draw: it reads `<...>` as its own markup and shows &lt; &gt; &amp; as the
    characters (but `&quot;` literally), so only those three are escaped."""
    return html.escape(str(value), quote=False)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def ended(row: dict[str, Any]) -> bool:
    """The run has reached a state it never leaves; otherwise its row is partial."""
    from submitter import contract

    return row.get("state") in contract.TERMINAL


def _ordered_keys(dicts: Iterable[dict[str, Any] | None]) -> list[str]:
    """The union of the dicts' keys, in order of first appearance."""
    seen: dict[str, None] = {}
    for d in dicts:
        for key in d or {}:
            seen.setdefault(str(key), None)
    return list(seen)


def _duration(seconds: Any) -> str:
    s = _number(seconds)
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _metric(value: Any) -> str:
    n = _number(value)
    return f"{n:.6g}" if n is not None else ("-" if value is None else str(value))


def _table(rows: list[dict[str, Any]]) -> str:
    sweep = _ordered_keys(r.get("sweep") for r in rows)
    metrics = _ordered_keys(r.get("metrics") for r in rows)
    head = (["run", "state"] + [f"sweep: {k}" for k in sweep] + metrics
            + ["runtime", "attempts", "interruptions", "cost"])
    lines = ['<div class="wide"><table>', "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = [f"<td>{_e(r.get('run_id', '?'))}</td>", f"<td>{_e(r.get('state') or '-')}</td>"]
        cells += [f"<td>{_e((r.get('sweep') or {}).get(k, '-'))}</td>" for k in sweep]
        cells += [f'<td class="num">{_e(_metric((r.get("metrics") or {}).get(k)))}</td>' for k in metrics]
        cost = _number(r.get("cost"))
        cells += [f'<td class="num">{_duration(r.get("runtime_s"))}</td>',
                  f'<td class="num">{_e(r.get("attempts", "-"))}</td>',
                  f'<td class="num">{_e(r.get("interruptions", "-"))}</td>',
                  f'<td class="num">{f"${cost:.4f}" if cost is not None else "-"}</td>']
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table></div>")
    return "\n".join(lines)


def _curve_names(rows: list[dict[str, Any]]) -> list[str]:
    """Metrics with at least one drawable point in some run's curve."""
    return [name for name in _ordered_keys(r.get("curves") for r in rows)
            if any(_points((r.get("curves") or {}).get(name)) for r in rows)]


def _points(curve: Any) -> list[tuple[float, float]]:
    """The curve's (step, value) pairs that can be drawn; anything malformed is left out, not fatal."""
    out = []
    for point in curve if isinstance(curve, list) else []:
        if isinstance(point, (list, tuple)) and len(point) == 2:
            step, value = _number(point[0]), _number(point[1])
            if step is not None and value is not None:
                out.append((step, value))
    return out


def _chart(fig: Any, div_id: str) -> str:
    import plotly.io as pio

    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 40, "b": 50})
    if fig.layout.height is None:
        fig.update_layout(height=CHART_HEIGHT)
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=_CONFIG,
                       default_height=f"{CHART_HEIGHT}px")


def _metric_charts(rows: list[dict[str, Any]]) -> list[str]:
    import plotly.graph_objects as go

    names = _curve_names(rows)
    parts = ["<h2>Metrics</h2>"]
    if not names:
        return parts + ['<p class="note">No metric curves yet: no run has streamed or written a metric series. '
                        "Final values, where there are any, are in the table above.</p>"]
    for i, name in enumerate(names):
        fig = go.Figure()
        for r in rows:
            points = _points((r.get("curves") or {}).get(name))
            if points:
                label = _t(r.get("run_id", "?"))
                fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                         name=label, marker={"size": 4},
                                         hovertemplate=f"{label}<br>step %{{x}}: %{{y}}<extra></extra>"))
        fig.update_layout(title={"text": _t(name)}, xaxis_title="step", yaxis_title=_t(name), showlegend=True)
        parts.append(f'<div class="chart">{_chart(fig, f"chart-metric-{i}")}</div>')
    return parts


def _bar_charts(rows: list[dict[str, Any]]) -> list[str]:
    import plotly.graph_objects as go

    parts = ["<h2>Cost and runtime</h2>"]
    for div_id, key, label, scale in (("chart-cost", "cost", "cost ($)", 1.0),
                                      ("chart-runtime", "runtime_s", "runtime (minutes)", 60.0)):
        known = [(r, v / scale) for r in rows if (v := _number(r.get(key))) is not None]
        if not known:
            parts.append(f'<p class="note">No {_e(label)} known for any run yet.</p>')
            continue
        fig = go.Figure(go.Bar(
            x=[_t(r.get("run_id", "?")) for r, _ in known], y=[v for _, v in known],
            marker={"color": [ENDINGS.get(str(r.get("state")), OTHER_COLOUR) for r, _ in known]},
            text=[_t(r.get("state") or "-") for r, _ in known], name=label,
            hovertemplate="%{x}<br>%{y:.4f} (%{text})<extra></extra>"))
        fig.update_layout(title={"text": label}, yaxis_title=label)
        parts.append(f'<div class="chart">{_chart(fig, div_id)}</div>')
    return parts


def _attempt_span(attempt: Any, now: datetime | None) -> tuple[datetime, datetime] | None:
    """When the attempt ran; one still running (no end) runs until `now`. None if it has no usable start."""
    from submitter import contract

    if not isinstance(attempt, dict):
        return None
    start = contract.parse_iso(attempt.get("started_at"))
    if start is None:
        return None
    end = contract.parse_iso(attempt.get("ended_at")) or now or start
    return start, max(end, start)


def _timeline(rows: list[dict[str, Any]], now: datetime) -> list[str]:
    import plotly.graph_objects as go

    parts = ["<h2>Attempts</h2>"]
    by_ending: dict[str, list[tuple[str, dict[str, Any], datetime, datetime]]] = {}
    for r in rows:
        for a in r.get("timeline") or []:
            span = _attempt_span(a, now)
            if span:
                ending = str(a.get("ending") or ("running" if not a.get("ended_at") else "unknown"))
                by_ending.setdefault(ending, []).append((str(r.get("run_id", "?")), a, *span))
    if not by_ending:
        return parts + ['<p class="note">No attempt has started yet.</p>']
    fig = go.Figure()
    for ending, bars in by_ending.items():
        fig.add_trace(go.Bar(
            orientation="h", name=_t(ending), marker={"color": ENDINGS.get(ending, OTHER_COLOUR)},
            y=[_t(run) for run, *_ in bars],
            base=[_utc(start) for _, _, start, _ in bars],
            x=[(end - start).total_seconds() * 1000 for _, _, start, end in bars],
            hovertext=[_hover(run, a, ending, start, end) for run, a, start, end in bars],
            hovertemplate="%{hovertext}<extra></extra>"))
    runs = len({run for bars in by_ending.values() for run, *_ in bars})
    fig.update_layout(title={"text": "attempts per run (instance, pool, how each ended)"}, barmode="overlay",
                      xaxis={"type": "date", "title": {"text": "UTC"}},
                      yaxis={"autorange": "reversed", "type": "category"},
                      height=max(CHART_HEIGHT, 80 + 40 * runs))
    return parts + [f'<div class="chart">{_chart(fig, "chart-timeline")}</div>']


def _utc(moment: datetime) -> str:
    """A UTC time as plotly.js reads dates: it ignores offsets, so the offset is applied here and left out."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _hover(run: str, a: dict[str, Any], ending: str, start: datetime, end: datetime) -> str:
    pool = f"{a.get('instance_type') or '?'} in {a.get('availability_zone') or '?'}"
    return "<br>".join(_t(x) for x in (
        f"{run} attempt {a.get('attempt', '?')}", f"instance {a.get('instance_id') or '?'}", pool,
        f"{start:%H:%M:%S} to {end:%H:%M:%S} UTC", ending))
