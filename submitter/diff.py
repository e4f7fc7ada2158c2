"""`diff`: what differed between two runs, field by field, and whether they were the same experiment.

Pure: a function of each run's record (Layout.run_spec), status document and final metrics. The experiment is
what the run was asked to do (image digest, command, env and sweep values, inputs, limits); the outcome is what
happened (placement, attempts, runtime, cost, metrics). Two runs are the same experiment when every experiment
field is equal, whatever their outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from submitter import contract

MISSING = None  # a field one run has and the other does not compares as None
MAX_METRICS_BYTES = 1 << 20


@dataclass(frozen=True)
class Side:
    """One run as `diff` reads it."""

    run_id: str
    record: dict[str, Any]
    status: dict[str, Any]
    metrics: dict[str, Any] | None = None


def compare(a: Side, b: Side) -> dict[str, Any]:
    """The comparison document (`diff --json`): every field of both runs, which differ, and the verdict."""
    experiment = _rows(_experiment(a), _experiment(b))
    outcome = _rows(_outcome(a), _outcome(b))
    differs = [row["field"] for row in experiment if not row["same"]]
    return {
        "a": a.run_id,
        "b": b.run_id,
        "same_experiment": not differs,
        "experiment_differs": differs,
        "outcome_differs": [row["field"] for row in outcome if not row["same"]],
        "reproduces": {a.run_id: a.record.get("reproduces"), b.run_id: b.record.get("reproduces")},
        "overrides": {a.run_id: a.record.get("overrides") or {}, b.run_id: b.record.get("overrides") or {}},
        "experiment": experiment,
        "outcome": outcome,
    }


def _rows(left: dict[str, Any], right: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(left) + [n for n in right if n not in left]
    return [{"field": n, "a": left.get(n, MISSING), "b": right.get(n, MISSING),
             "same": left.get(n, MISSING) == right.get(n, MISSING)} for n in names]


def _experiment(side: Side) -> dict[str, Any]:
    record = side.record
    spec = record.get("spec") or {}
    git = record.get("git") or {}
    image = str(record.get("image") or "")
    fields: dict[str, Any] = {
        "image.digest": image.partition("@")[2] or image or MISSING,
        "image.git_commit": git.get("commit"),
        "image.git_dirty": git.get("dirty"),
        "command": record.get("command"),
    }
    sweep = record.get("sweep") or {}
    for name, value in sorted((record.get("env") or {}).items()):
        fields[f"{'sweep' if name in sweep else 'env'}.{name}"] = value
    for item in record.get("inputs") or []:
        fields[f"input {item.get('target')}"] = _input_identity(item)
    for name in ("limits", "retries"):
        for key, value in sorted((spec.get(name) or {}).items()):
            fields[f"{name}.{key}"] = value
    for key in ("volume_mount", "outputs", "checkpoints"):
        fields[key] = spec.get(key)
    resources = spec.get("resources") or {}
    fields["resources.gpus"] = resources.get("gpus")
    fields["resources.volume_gb"] = resources.get("volume_gb")
    fields["secrets"] = sorted(spec.get("secrets") or [])
    return fields


def _input_identity(item: dict[str, Any]) -> Any:
    """What names an input's bytes: its staged digest, else its source and pin (ETag, version, listing)."""
    if item.get("digest"):
        return f"sha256:{item['digest']}"
    found = item.get("pin")
    pin: dict[str, Any] = found if isinstance(found, dict) else {}
    named = {k: pin[k] for k in ("etag", "version_id", "listing_sha256") if pin.get(k)}
    return {"source": item.get("uri"), **named}


def _outcome(side: Side) -> dict[str, Any]:
    status = side.status
    fields: dict[str, Any] = {
        "state": status.get("state", contract.UNKNOWN),
        "exit_code": status.get("exit_code"),
        "instance_type": status.get("instance_type"),
        "availability_zone": status.get("availability_zone"),
        "attempts": status.get("attempt"),
        "interruptions": status.get("interruptions"),
        "runtime_s": runtime_seconds(status),
        "cost": status.get("cost"),
    }
    reported = status.get("host")
    host: dict[str, Any] = reported if isinstance(reported, dict) else {}
    for key, value in sorted(host.items()):
        fields[f"host.{key}"] = value
    for key, value in _flat(side.metrics or {}).items():
        fields[f"metrics.{key}"] = value
    return fields


def runtime_seconds(status: dict[str, Any]) -> int | None:
    start, end = contract.parse_iso(status.get("started_at")), contract.parse_iso(status.get("ended_at"))
    return int((end - start).total_seconds()) if start and end else None


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a metrics document as dotted names; lists (a loss history) are left out: the final values
    are what tell two runs apart, and the history follows from them."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            out[f"{prefix}{key}"] = value
    return out


def lines(result: dict[str, Any], everything: bool = False) -> list[str]:
    """The human view: the verdict, then each differing field (all fields with `everything`)."""
    a, b = result["a"], result["b"]
    out = [f"A {a}", f"B {b}"]
    for run, origin in result["reproduces"].items():
        if origin:
            changed = result["overrides"].get(run) or {}
            out.append(f"{'A' if run == a else 'B'} reproduces {origin}"
                       + (f", with {_overrides(changed)}" if changed else ""))
    differs = result["experiment_differs"]
    if not differs:
        out.append("same experiment: image, command, env and sweep values, inputs and limits are identical")
    else:
        out.append(f"different experiments: {len(differs)} field(s) differ: {', '.join(differs)}")
    for title, rows in (("experiment", result["experiment"]), ("outcome", result["outcome"])):
        shown = [r for r in rows if everything or not r["same"]]
        if not shown:
            out.append(f"{title}: no difference")
            continue
        out.append(f"{title}:")
        width = max(len(r["field"]) for r in shown)
        for r in shown:
            mark = "=" if r["same"] else "≠"
            value = _shown(r["a"]) if r["same"] else f"{_shown(r['a'])}  ->  {_shown(r['b'])}"
            out.append(f"  {mark} {r['field']:<{width}}  {value}")
    return out


def _overrides(changed: dict[str, Any]) -> str:
    parts = [f"{name}={v['now']} (was {v['was']})" for name, v in (changed.get("env") or {}).items()]
    if "instance_types" in changed:
        parts.append(f"instance types {','.join(changed['instance_types']['now'])}")
    return ", ".join(parts)


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, list):
        text = " ".join(str(v) for v in value)
    else:
        text = str(value)
    # Metrics and statuses come from the job's side: no control character reaches the terminal.
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= 200 else text[:200] + "..."


def read_side(s3: Any, layout: contract.Layout, run_id: str) -> Side:
    """One run's record, status and final metrics from S3 (`s3`: aws.s3.S3). A metrics file that is missing or
    not a JSON object (the job writes it) compares as no metrics."""
    from submitter.rerun import read_record

    record = read_record(s3, layout, run_id)
    status = s3.get_json(layout.status(run_id))
    key = layout.final_metrics(run_id)
    listed = [o for o in s3.objects(key) if o.get("Key") == key]
    metrics = None
    if listed and int(listed[0].get("Size", 0)) <= MAX_METRICS_BYTES:  # the job writes it: never read a huge one
        try:
            metrics = s3.get_json(key)
        except ValueError:
            metrics = None
    return Side(run_id, record, status if isinstance(status, dict) else {},
                metrics if isinstance(metrics, dict) else None)
