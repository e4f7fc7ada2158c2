"""`compare`'s pure part: a run's row from its documents (hostile ones too), the best-first order, the CSV
(submitter/compare.py)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from submitter import compare
from submitter.errors import UsageError

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)
RUN = "exp-20261130-110000-abcdef-0"


def _row(status: Any = None, spec: Any = None, final: Any = None, stream: bytes | None = None,
         run_id: str = RUN) -> dict[str, Any]:
    return compare.row(run_id, status, spec, final, stream, NOW)


def _stream(*lines: Any) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def test_a_finished_run_has_its_sweep_metrics_curves_runtime_and_timeline() -> None:
    status = {"run_id": RUN, "submission_id": "exp-20261130-110000-abcdef", "state": "succeeded", "attempt": 2,
              "interruptions": 1, "cost": 0.0123, "started_at": "2026-11-30T11:10:00Z",
              "ended_at": "2026-11-30T11:20:00Z", "timeline": [
                  {"attempt": 1, "instance_id": "i-1", "instance_type": "c5.large", "availability_zone": "a",
                   "started_at": "2026-11-30T11:00:00Z", "ended_at": "2026-11-30T11:05:00Z", "ending": "interrupted"},
                  {"attempt": 2, "instance_id": "i-2", "started_at": "2026-11-30T11:10:00Z",
                   "ended_at": "2026-11-30T11:20:00Z", "ending": "succeeded", "extra": "dropped"}]}
    spec = {"sweep": {"LR": "0.1", "BATCH": 32, "nested": {"no": 1}}}
    final = {"accuracy": 0.9, "loss": 0.3, "status": "completed", "ok": True, "history": [{"epoch": 1}],
             "per_epoch": [0.5, 0.7, 0.9]}
    r = _row(status, spec, final, _stream({"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.3}))
    assert r["state"] == "succeeded" and r["submission_id"] == "exp-20261130-110000-abcdef"
    assert r["sweep"] == {"LR": "0.1", "BATCH": 32}
    assert r["metrics"] == {"accuracy": 0.9, "loss": 0.3}  # strings, booleans, lists are not final metrics
    assert r["curves"] == {"loss": [[1, 0.5], [2, 0.3]]}  # the stream wins over metrics.json's lists
    assert r["runtime_s"] == 900.0  # 5 + 10 minutes: both attempts, not the gap between them
    assert (r["attempts"], r["interruptions"], r["cost"]) == (2, 1, 0.0123)
    assert [e["ending"] for e in r["timeline"]] == ["interrupted", "succeeded"]
    assert r["timeline"][1]["instance_type"] is None and "extra" not in r["timeline"][1]


def test_missing_documents_give_empty_fields() -> None:
    r = _row()
    assert r["state"] == "unknown" and r["sweep"] == {} and r["metrics"] == {} and r["curves"] == {}
    assert r["runtime_s"] is None and r["cost"] is None and r["timeline"] == [] and r["attempts"] == 0
    assert r["submission_id"] == "exp-20261130-110000-abcdef"


def test_without_a_stream_the_lists_of_metrics_json_are_curves_and_a_running_run_has_its_latest_values() -> None:
    assert _row(final={"loss": [1.0, 0.5], "mixed": [1, "x"]})["curves"] == {"loss": [[0, 1.0], [1, 0.5]]}
    running = _row({"state": "running", "started_at": "2026-11-30T11:59:00Z"}, stream=_stream({"loss": 2.0},
                                                                                               {"loss": 1.5}))
    assert running["metrics"] == {"loss": 1.5} and running["curves"] == {"loss": [[0, 2.0], [1, 1.5]]}
    assert running["runtime_s"] == 60.0  # up to now while it runs


def test_hostile_stream_lines_are_skipped_not_fatal() -> None:
    stream = _stream(
        {"step": 0, "loss": 1.0},
        b"not json", b"[1, 2]", b'"a string"', b"", b"\xff\xfe",
        {"step": 1, "loss": "NaN", "acc": True, "obj": {"x": 1}},
        b'{"step": 2, "loss": NaN, "acc": Infinity}',
        {"step": "three", "loss": 0.7},  # a step that is no number: the line's index stands in
        {"step": 1, "loss": 0.9},  # a redone step (a resumed attempt) keeps its latest value
        {"x" * 200: 1.0},
    ) + b'{"step": 9, "loss": 0.1'  # a torn last line
    curves = compare.curves_of_stream(stream)
    assert curves == {"loss": [[0, 1.0], [1, 0.9], [8, 0.7]]}


def test_curves_and_points_are_bounded() -> None:
    lines = [{"step": i, **{f"m{k}": float(i) for k in range(compare.MAX_CURVES + 5)}} for i in range(20)]
    assert len(compare.curves_of_stream(_stream(*lines))) == compare.MAX_CURVES
    long = compare.curves_of_stream(_stream(*({"step": i, "loss": float(i)} for i in range(12000))))["loss"]
    assert len(long) == compare.MAX_POINTS and long[0] == [0, 0.0] and long[-1] == [11999, 11999.0]


def _ranked(**metrics: Any) -> list[dict[str, Any]]:
    return [{"run_id": name, "metrics": m, "cost": None} for name, m in metrics.items()]


def test_order_is_best_first_with_the_direction_from_the_name() -> None:
    rows = _ranked(a={"accuracy": 0.8, "loss": 0.2}, b={"accuracy": 0.9, "loss": 0.4}, c={}, d={"accuracy": 0.85})
    assert [r["run_id"] for r in compare.order(rows)] == ["b", "d", "a", "c"]  # default: the first metric
    assert [r["run_id"] for r in compare.order(rows, "loss")] == ["a", "b", "c", "d"]  # lower is better; none: last
    assert [r["run_id"] for r in compare.order(rows, "loss:max")] == ["b", "a", "c", "d"]
    assert compare.sort_key(rows, None) == ("accuracy", "max") and compare.sort_key(rows, "loss") == ("loss", "min")
    costs = [{"run_id": "x", "metrics": {}, "cost": 0.5}, {"run_id": "y", "metrics": {}, "cost": 0.1}]
    assert [r["run_id"] for r in compare.order(costs, "cost")] == ["y", "x"]
    assert compare.order(_ranked(a={}, b={})) == _ranked(a={}, b={})  # nothing to sort by: run order


def test_an_unknown_sort_names_what_there_is() -> None:
    rows = _ranked(a={"accuracy": 0.8})
    with pytest.raises(UsageError, match=r"no run has a metric 'acc'.*\n.*accuracy, runtime_s"):
        compare.order(rows, "acc")
    with pytest.raises(UsageError, match="must be min or max"):
        compare.order(rows, "accuracy:best")


def test_csv_has_a_column_per_sweep_value_and_metric() -> None:
    rows = [_row({"state": "succeeded", "attempt": 1, "cost": 0.5}, {"sweep": {"LR": "0.1"}}, {"loss": 0.25}),
            _row({"state": "failed", "attempt": 1}, {"sweep": {"LR": "0.01", "HIDDEN": 8}}, None,
                 run_id=RUN[:-1] + "1")]
    parsed = list(csv.reader(io.StringIO(compare.to_csv(rows))))
    assert parsed[0] == ["run_id", "state", "sweep.LR", "sweep.HIDDEN", "metric.loss", "runtime_s", "attempts",
                         "interruptions", "cost"]
    assert parsed[1] == [RUN, "succeeded", "0.1", "", "0.25", "", "1", "0", "0.5"]
    assert parsed[2] == [RUN[:-1] + "1", "failed", "0.01", "8", "", "", "1", "0", ""]
