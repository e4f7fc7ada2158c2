"""The contract's documents: the status document, the queue message, what a run record cannot pin, and the
names read back from keys. Standard library only, Python 3.9 (it ships in the runtime artefact)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from submitter.contract import QUEUED, TERMINAL, UNKNOWN, Layout, parse_iso


def staged_digest(layout: Layout, bucket: str, uri: str) -> str | None:
    """The DIGEST of an input staged under Layout.input(DIGEST) of this bucket and prefix, else None."""
    ours = Layout.uri(bucket, layout.inputs)
    if not uri.startswith(ours):
        return None
    digest = uri[len(ours):].split("/", 1)[0]
    return digest if re.fullmatch(r"[0-9a-f]{8,64}", digest) else None


# What a run record (Layout.run_spec) does not pin, so a rerun may differ there (docs/runtime-contract.md,
# "Reproducing a run"). The instance's AMI id, kernel, docker and GPU driver versions are in each attempt's
# status document (`host`), reported by the runtime at boot.
NOT_RECORDED = [
    "secret values (only their names; a rerun reads them from the environment again)",
    "the spot placement (instance type and AZ are chosen from the market again)",
    "s3:// inputs are pinned by ETag (and version id when the bucket is versioned) and a rerun refuses a changed "
    "one, but the runtime downloads the current objects, never an older version",
]


# ----------------------------------------------------------------------------------------- documents


def run_message(run_id: str, index: int | None, env: dict[str, str]) -> dict[str, Any]:
    """One queue message: a run to do (`index` is None for a submission of one run, which has no sweep)."""
    return {"run_id": run_id, "index": index, "env": env}


@dataclass
class Status:
    """runs/RUN/status.json. `submit` writes `queued`; the runtime writes the rest. Fields it does not know
    (written by a newer version) are kept in `extra` and written back unchanged."""

    run_id: str
    submission_id: str = ""
    job: str = ""
    state: str = QUEUED
    reason: str | None = None
    exit_code: int | None = None
    attempt: int = 0
    interruptions: int = 0
    failures: int = 0
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    heartbeat_at: str | None = None
    instance_id: str | None = None
    instance_type: str | None = None
    availability_zone: str | None = None
    price: float | None = None
    cost: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None, run_id: str = "") -> Status:
        """A status from its JSON document; a missing or unreadable document is state `unknown`."""
        if not isinstance(doc, dict):
            return cls(run_id=run_id, state=UNKNOWN)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: v for k, v in doc.items() if k in known}
        values.setdefault("run_id", run_id)
        for name in ("attempt", "interruptions", "failures"):
            values[name] = _int(values.get(name))
        for name in ("price", "cost"):
            if values.get(name) is not None:
                values[name] = _float(values[name])
        if values.get("exit_code") is not None:
            values["exit_code"] = _int(values["exit_code"])
        return cls(**values, extra={k: v for k, v in doc.items() if k not in known and k != "extra"})

    def to_json(self) -> dict[str, Any]:
        """The document: fields that are None are left out."""
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out = {k: v for k, v in doc.items() if v is not None}
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    def evolve(self, state: str, **fields: Any) -> Status:
        """A copy in `state` with `fields` set; a field given as None is cleared (a new attempt clears the old
        end)."""
        known = {f.name for f in dataclasses.fields(self)} - {"extra"}
        extra = dict(self.extra)
        direct: dict[str, Any] = {}
        for name, value in fields.items():
            if name in known:
                direct[name] = value
            elif value is None:
                extra.pop(name, None)
            else:
                extra[name] = value
        return dataclasses.replace(self, state=state, extra=extra, **direct)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def manifest_number(key: str, checkpoints_prefix: str) -> int | None:
    """N of the key `manifests/NNNNNN.json` right below the run's checkpoints prefix (Layout.checkpoint_manifest)."""
    rest = key[len(checkpoints_prefix):] if key.startswith(checkpoints_prefix) else ""
    folder, _, name = rest.partition("/")
    if folder != "manifests" or not name.endswith(".json") or not name[:-5].isdigit():
        return None
    return int(name[:-5])


def generation_number(key: str, checkpoints_prefix: str) -> int | None:
    """N of a key below `generations/NNNNNN/` of the run's checkpoints prefix (Layout.checkpoint_generation)."""
    rest = key[len(checkpoints_prefix):] if key.startswith(checkpoints_prefix) else ""
    parts = rest.split("/", 2)
    if len(parts) < 3 or parts[0] != "generations" or not parts[1].isdigit():
        return None
    return int(parts[1])


def checkpoint_age_s(status: dict[str, Any], now: datetime | None = None) -> int | None:
    """Seconds since the run's last checkpoint manifest (its status's `checkpoint_at`), None when it has none."""
    written = parse_iso(status.get("checkpoint_at"))
    if written is None:
        return None
    return max(0, int(((now or datetime.now(timezone.utc)) - written).total_seconds()))


def queued_runs(doc: dict[str, Any] | None) -> list[str]:
    """The run ids a `queued` marker lists."""
    return [str(r) for r in (doc or {}).get("runs", [])]


# ----------------------------------------------------------------------------- names and paths read back
# Run ids and keys come back from documents and listings a job could have written (a `queued` marker, a
# Batch record, a queue message, its own outputs). Before one becomes a path on a disk, it is checked here.

_SUBMISSION_ID = r"[a-z0-9-]{1,40}-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}"  # spec/sweep.py: NAME-YYYYmmdd-HHMMSS-TOKEN
_RUN_ID = re.compile(r"(?P<submission>" + _SUBMISSION_ID + r")(?:-(?P<index>[0-9]{1,9}))?")


def submission_of(run_id: str) -> str | None:
    """The submission a run id belongs to (SUB, or SUB-<index> for a sweep), None when it is not a run id."""
    match = _RUN_ID.fullmatch(run_id) if isinstance(run_id, str) else None
    return match.group("submission") if match else None


def is_run_of(run_id: str, submission_id: str) -> bool:
    """True when `run_id` is one of `submission_id`'s run ids: the id itself or `<id>-<index>`."""
    if not isinstance(run_id, str) or _RUN_ID.fullmatch(run_id) is None:
        return False
    rest = run_id[len(submission_id):] if run_id.startswith(submission_id) else None
    return rest == "" or (rest is not None and rest[:1] == "-" and rest[1:].isdigit() and rest[1:].isascii())


def safe_relative(rel: str) -> str | None:
    """`rel` (a key below a prefix) when it names a file inside a directory: no empty, `.` or `..` segment, not
    absolute, no NUL or backslash; None otherwise (the caller refuses the key and says so)."""
    if not rel or "\\" in rel or "\0" in rel:
        return None
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return rel
