"""`compare`: one row per run of a sweep (its swept values, final metrics, curves, runtime, attempts and
interruptions, cost, the attempts' timeline), read from S3 and ordered best first. `report` renders the same rows.

Everything read here may have been written by the job (its outputs, its metrics stream): what is not a finite
number is left out, never a crash, and every read is bounded."""

from __future__ import annotations

import csv
import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from submitter import contract
from submitter.aws.s3 import S3
from submitter.errors import UsageError
from submitter.tracking import STATUS_THREADS, Where

FINAL_METRICS_CAP = 1024 * 1024  # bytes of outputs/metrics.json read
MAX_CURVES = 64  # metric names kept from the stream (or metrics.json lists), in the order first seen
MAX_POINTS = 5000  # a longer curve is thinned evenly (its first and last points kept)
COLUMNS = ("runtime_s", "attempts", "interruptions", "cost")  # what --sort may name besides a metric
# A metric whose name holds one of these is better lower; any other, higher (`--sort NAME:min|max` overrides).
LOWER_IS_BETTER = ("loss", "error", "err", "mse", "mae", "rmse", "perplexity", "ppl", "wer", "cer", "time",
                   "cost", "runtime", "latency", "interruptions", "attempts")


# ------------------------------------------------------------------------------------------- gathering


def gather(s3: S3, where: Where, run_ids: list[str], now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per run, in `run_ids` order: its status document, run record (the swept values), final metrics and
    metrics stream, read STATUS_THREADS objects at a time (a 100-run sweep is 400 small GETs)."""
    layout = where.layout
    now = now or datetime.now(timezone.utc)
    reads = [(run_id, kind) for run_id in run_ids for kind in ("status", "spec", "final", "stream")]

    def read(item: tuple[str, str]) -> bytes | None:
        run_id, kind = item
        if contract.submission_of(run_id) is None:  # only a run id is spliced into a key
            return None
        if kind == "status":
            return s3.get_bytes(layout.status(run_id))
        if kind == "spec":
            return s3.get_bytes(layout.run_spec(run_id))
        if kind == "final":
            return s3.get_bytes(layout.final_metrics(run_id), limit=FINAL_METRICS_CAP)
        return s3.get_bytes(layout.metrics_stream(run_id), limit=contract.METRICS_CAP)

    if not reads:
        return []
    with ThreadPoolExecutor(min(STATUS_THREADS, len(reads))) as pool:
        bodies = dict(zip(reads, pool.map(read, reads), strict=True))
    return [row(run_id, _json(bodies[(run_id, "status")]), _json(bodies[(run_id, "spec")]),
                _json(bodies[(run_id, "final")]), bodies[(run_id, "stream")], now) for run_id in run_ids]


def _json(body: bytes | None) -> Any:
    if body is None:
        return None
    try:
        return json.loads(body)
    except ValueError:  # torn, capped or not JSON at all: as good as missing
        return None


def row(run_id: str, status_doc: Any, spec: Any, final: Any, stream: bytes | None, now: datetime) -> dict[str, Any]:
    """The row of one run from its documents (any of them None when missing)."""
    status = contract.Status.from_json(status_doc, run_id)
    timeline = attempts(status_doc)
    stream_curves = curves_of_stream(stream or b"")
    metrics = scalars(final)
    if not metrics and stream_curves:  # until metrics.json exists (a running run), the latest values stand in
        metrics = {name: points[-1][1] for name, points in stream_curves.items()}
    return {
        "run_id": run_id,
        "submission_id": status.submission_id or contract.submission_of(run_id),
        "state": status.state,
        "reason": status.reason,
        "sweep": sweep_of(spec),
        "metrics": metrics,
        "curves": stream_curves or curves_of_lists(final),
        "runtime_s": runtime_s(status, timeline, now),
        "attempts": status.attempt,
        "interruptions": status.interruptions,
        "cost": status.cost,
        "timeline": timeline,
    }


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _name(key: Any) -> bool:
    return isinstance(key, str) and 0 < len(key) <= 100


def scalars(doc: Any) -> dict[str, float | int]:
    """metrics.json's top-level numbers (booleans, strings, NaN and nested values are not metrics)."""
    if not isinstance(doc, dict):
        return {}
    found = {k: _number(v) for k, v in doc.items() if _name(k)}
    return {k: v for k, v in found.items() if v is not None}


def curves_of_lists(doc: Any) -> dict[str, list[list[float]]]:
    """metrics.json's lists of numbers, each a curve over its index."""
    out: dict[str, list[list[float]]] = {}
    for key, value in (doc.items() if isinstance(doc, dict) else []):
        if _name(key) and isinstance(value, list) and len(out) < MAX_CURVES:
            points = [[index, _number(v)] for index, v in enumerate(value)]
            kept = [p for p in points if p[1] is not None]
            if kept and len(kept) == len(value):  # a list of numbers; a list of anything else is no curve
                out[key] = thin(kept)  # type: ignore[arg-type]
    return out


def curves_of_stream(data: bytes) -> dict[str, list[list[float]]]:
    """The stream's curves: each JSON-object line gives a point of every number in it, at its `step` (the line's
    index when it has none). A step seen again (a resumed attempt redoing steps) keeps its latest value."""
    found: dict[str, dict[float, float]] = {}
    for index, line in enumerate(data.splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # a torn last line, or noise
        if not isinstance(doc, dict):
            continue
        step = _number(doc.get("step"))
        at = step if step is not None else index
        for key, value in doc.items():
            number = _number(value)
            if key == "step" or number is None or not _name(key):
                continue
            if key not in found and len(found) >= MAX_CURVES:
                continue
            found.setdefault(key, {})[at] = number
    return {name: thin([[s, v] for s, v in sorted(points.items())]) for name, points in found.items()}


def thin(points: list[list[float]], limit: int = MAX_POINTS) -> list[list[float]]:
    if len(points) <= limit:
        return points
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def sweep_of(spec: Any) -> dict[str, Any]:
    """The run record's swept values (scalars only)."""
    sweep = spec.get("sweep") if isinstance(spec, dict) else None
    if not isinstance(sweep, dict):
        return {}
    return {str(k): v for k, v in sweep.items() if isinstance(v, (str, int, float, bool)) or v is None}


def attempts(status_doc: Any) -> list[dict[str, Any]]:
    """The status's per-attempt timeline (the runtime's `timeline`), each entry with the same keys."""
    entries = status_doc.get("timeline") if isinstance(status_doc, dict) else None
    keys = ("attempt", "instance_id", "instance_type", "availability_zone", "started_at", "ended_at", "ending",
            "reason")
    return [{k: e.get(k) for k in keys} for e in entries or [] if isinstance(e, dict)] \
        if isinstance(entries, list) else []


def runtime_s(status: contract.Status, timeline: list[dict[str, Any]], now: datetime) -> float | None:
    """Seconds the run's attempts ran (a running attempt up to now); None when it never started."""
    spans = [(e.get("started_at"), e.get("ended_at")) for e in timeline] or [(status.started_at, status.ended_at)]
    total, known = 0.0, False
    for start_text, end_text in spans:
        start = contract.parse_iso(start_text)
        end = contract.parse_iso(end_text) or (now if status.state in contract.ACTIVE else None)
        if start is not None and end is not None and end >= start:
            total, known = total + (end - start).total_seconds(), True
    return round(total, 1) if known else None


# ------------------------------------------------------------------------------------------- ordering


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """Every metric name, in the order first seen going down the rows."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r.get("metrics") or {}))
    return list(names)


def sort_key(rows: list[dict[str, Any]], sort: str | None) -> tuple[str, str] | None:
    """(name, "min" or "max") that `order` sorts by: `sort` is NAME or NAME:min or NAME:max, NAME a metric or one
    of COLUMNS; default, the first metric. None when there is nothing to sort by. A name no row has is a
    UsageError listing the names there are."""
    names = metric_names(rows)
    if not sort:
        if not names:
            return None
        sort = names[0]
    name, _, direction = sort.partition(":")
    if direction not in ("", "min", "max"):
        raise UsageError("--sort", f"{sort!r}: the direction after ':' must be min or max",
                         f"e.g. --sort {name}:max")
    if name not in names and name not in COLUMNS:
        known = ", ".join(names + list(COLUMNS))
        raise UsageError("--sort", f"no run has a metric {name!r}", f"sort by one of: {known}")
    if not direction:
        direction = "min" if any(word in name.lower() for word in LOWER_IS_BETTER) else "max"
    return name, direction


def value_of(r: dict[str, Any], name: str) -> float | None:
    metrics = r.get("metrics") or {}
    value = metrics[name] if name in metrics else (r.get(name) if name in COLUMNS else None)
    return _number(value)


def order(rows: list[dict[str, Any]], sort: str | None = None) -> list[dict[str, Any]]:
    """The rows best first by `sort` (see sort_key: a metric or a column, with an optional `:min`/`:max`; the
    direction is guessed from the name otherwise: loss, error, time, cost... lower is better, anything else
    higher). Rows without that value come last, in their given order; ties keep their given order too."""
    key = sort_key(rows, sort)
    if key is None:
        return list(rows)
    name, direction = key
    sign = 1.0 if direction == "min" else -1.0
    known = [r for r in rows if value_of(r, name) is not None]
    missing = [r for r in rows if value_of(r, name) is None]
    return sorted(known, key=lambda r: sign * float(value_of(r, name) or 0.0)) + missing


# ------------------------------------------------------------------------------------------- output


def sweep_names(rows: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r.get("sweep") or {}))
    return list(names)


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Flat columns (run, state, `sweep.NAME`..., `metric.NAME`..., runtime, attempts, interruptions, cost) and one
    list of values per row, None where a run has no value: what --csv writes."""
    sweeps, metrics = sweep_names(rows), metric_names(rows)
    header = ["run_id", "state", *(f"sweep.{n}" for n in sweeps), *(f"metric.{n}" for n in metrics),
              "runtime_s", "attempts", "interruptions", "cost"]
    body = [[r["run_id"], r["state"], *((r.get("sweep") or {}).get(n) for n in sweeps),
             *((r.get("metrics") or {}).get(n) for n in metrics),
             r.get("runtime_s"), r.get("attempts"), r.get("interruptions"), r.get("cost")] for r in rows]
    return header, body


def to_csv(rows: list[dict[str, Any]]) -> str:
    header, body = table(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in values] for values in body])
    return out.getvalue()
