"""The report page, as HTML text (no browser: tests/functional/test_report_chromium.py draws it): self-contained,
every run-provided string escaped, a note instead of an empty chart, running attempts drawn up to the page's
time. render() is pure: rows in, a string out."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from submitter import report

NOW = datetime(2026, 11, 30, 22, 15, tzinfo=timezone.utc)
SUB = "exp1-20261130-220000-abc123"
HOSTILE = '<script>alert("x")</script>'


def _row(i: int, state: str = "succeeded", **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": f"{SUB}-{i}", "submission_id": SUB, "state": state, "sweep": {"lr": 0.1 * i},
                           "metrics": {"loss": 1.0 / (i + 1)}, "curves": {"loss": [[0, 2.0], [1, 1.0 / (i + 1)]]},
                           "runtime_s": 60.0 * (i + 1), "attempts": 1, "interruptions": 0, "cost": 0.01 * (i + 1),
                           "timeline": [{"attempt": 1, "instance_id": f"i-{i:017x}", "instance_type": "g4dn.xlarge",
                                         "availability_zone": "us-east-1a", "started_at": "2026-11-30T22:00:00Z",
                                         "ended_at": "2026-11-30T22:05:00Z", "ending": state}]}
    row.update(extra)
    return row


def _figures(page: str) -> dict[str, tuple[list[Any], dict[str, Any]]]:
    """Each chart's plotly data and layout, as embedded in the page (plotly's Plotly.newPlot calls)."""
    found = {}
    for div_id, data, layout in re.findall(r'Plotly\.newPlot\(\s*"([^"]+)",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{',
                                           page, flags=re.S):
        found[div_id] = (json.loads(data), json.loads(layout))
    return found


def test_the_page_is_self_contained_with_one_copy_of_plotly_and_every_chart() -> None:
    rows = [_row(0), _row(1, "failed")]
    page = report.render(rows, "exp1", NOW)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script src=" not in page and "cdn" not in page.split("</head>")[1]  # nothing fetched when opened
    assert page.count("plotly.js v") == 1  # the library's banner: inlined once for all charts
    figures = _figures(page)
    assert list(figures) == report.chart_ids(rows) == ["chart-metric-0", "chart-cost", "chart-runtime",
                                                       "chart-timeline"]
    assert [t["name"] for t in figures["chart-metric-0"][0]] == [f"{SUB}-0", f"{SUB}-1"]
    assert figures["chart-cost"][0][0]["y"] == [0.01, 0.02]
    assert figures["chart-runtime"][0][0]["y"] == [1.0, 2.0]  # minutes
    assert sorted(t["name"] for t in figures["chart-timeline"][0]) == ["failed", "succeeded"]
    assert "2 run(s); generated 2026-11-30 22:15:00 UTC" in page


def test_hostile_strings_are_text_in_the_table_and_in_the_charts() -> None:
    rows = [_row(0, sweep={"lr": HOSTILE}, metrics={HOSTILE: 1.0}, curves={HOSTILE: [[0, 1.0], [1, 2.0]]},
                 run_id=f"{SUB}-0")]
    rows[0]["timeline"][0]["instance_type"] = HOSTILE
    page = report.render(rows, HOSTILE, NOW)
    assert HOSTILE not in page  # not once, anywhere: the HTML is escaped, plotly's JSON escapes '<' as \u003c
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # the table and the title show it
    data, layout = _figures(page)["chart-metric-0"]
    assert layout["title"]["text"] == '&lt;script&gt;alert("x")&lt;/script&gt;'  # plotly shows it as text
    assert HOSTILE not in json.dumps(_figures(page)["chart-timeline"][0])


def test_no_runs_and_no_metrics_yet_say_so_instead_of_drawing_empty_charts() -> None:
    page = report.render([], "exp1", NOW)
    assert "No runs found" in page and "Plotly.newPlot" not in page

    queued = _row(0, "queued", metrics={}, curves={}, runtime_s=None, cost=None, timeline=[])
    page = report.render([queued], "exp1", NOW)
    assert report.chart_ids([queued]) == [] and "Plotly.newPlot" not in page
    for note in ("No metric curves yet", "No cost ($) known", "No runtime (minutes) known", "No attempt has started"):
        assert note in page
    assert "1 still going" in page


def test_a_running_attempt_is_drawn_up_to_the_page_time_and_bad_points_are_left_out() -> None:
    running = _row(0, "running", runtime_s=None, cost=None,
                   curves={"loss": [[0, 1.0], [1, float("nan")], ["x", 2.0], [2], [3, 0.5], [4, True]]})
    running["timeline"] = [{"attempt": 1, "instance_id": "i-1", "started_at": "2026-11-30T22:00:00Z",
                            "ended_at": "2026-11-30T22:05:00Z", "ending": "interrupted"},
                           {"attempt": 2, "instance_id": "i-2", "started_at": "2026-11-30T22:10:00Z",
                            "ended_at": None, "ending": None},
                           {"attempt": 3, "started_at": "not a time"}]
    figures = _figures(report.render([running], "exp1", NOW))
    loss = figures["chart-metric-0"][0][0]
    assert (loss["x"], loss["y"]) == ([0.0, 3.0], [1.0, 0.5])
    bars = {t["name"]: t for t in figures["chart-timeline"][0]}
    assert sorted(bars) == ["interrupted", "running"]
    assert bars["running"]["base"] == ["2026-11-30 22:10:00.000000"] and bars["running"]["x"] == [300_000.0]
    assert bars["interrupted"]["x"] == [300_000.0]
    assert "chart-cost" not in figures and "chart-runtime" not in figures


def test_the_table_has_a_column_per_sweep_value_and_metric_in_the_runs_order() -> None:
    rows = [_row(1, metrics={"loss": 0.25, "acc": 0.9}), _row(0, metrics={"f1": 0.5})]
    page = report.render(rows, "exp1", NOW)
    head = re.search(r"<tr>(<th>.*?)</tr>", page)
    assert head is not None
    assert re.findall(r"<th>(.*?)</th>", head.group(1)) == [
        "run", "state", "sweep: lr", "loss", "acc", "f1", "runtime", "attempts", "interruptions", "cost"]
    assert page.index(f"<td>{SUB}-1</td>") < page.index(f"<td>{SUB}-0</td>")  # as given: compare.order's
    assert "<td>0:02:00</td>" not in page and '<td class="num">0:02:00</td>' in page
