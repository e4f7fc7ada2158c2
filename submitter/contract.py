"""The runtime contract: what the submit side and the instance runtime agree on (S3 layout, run states, the
status document, shared constants). docs/runtime-contract.md is its prose.

Standard library only and Python 3.9 compatible: it ships inside the instance runtime artefact unchanged.
No other module spells a key path, a state name or `status.json`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# ----------------------------------------------------------------------------------------- run states

QUEUED = "queued"
STARTING = "starting"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"
CANCELLED = "cancelled"
UNKNOWN = "unknown"  # no status document could be read: never written, only reported
STATES = (QUEUED, STARTING, RUNNING, SUCCEEDED, FAILED, INTERRUPTED, CANCELLED)
TERMINAL = frozenset((SUCCEEDED, FAILED, CANCELLED))
ACTIVE = frozenset((STARTING, RUNNING))  # a worker holds the run; no end has been written
NOT_STARTED = frozenset((QUEUED, INTERRUPTED, UNKNOWN))  # no container runs for these now

# Instance report states (submissions/SUB/instances/ID.json).
BOOT_FAILED, DRAINED, STOPPED, AGENT_ERROR = "boot-failed", "drained", "stopped", "agent-error"

# ----------------------------------------------------------------------------------------- constants

SUBMISSION_VERSION = 1
VISIBILITY_TIMEOUT_S = 300  # a received run stays hidden this long; the runtime extends it while the run lives
VISIBILITY_EXTEND_EVERY_S = 60
DEADMAN_MARGIN_S = 15 * 60  # boot, pull, stop and uploads on top of max_runtime before the host powers off
DEFAULT_DEADMAN_MINUTES = 60
EXIT_RETRY = 75  # the runtime's exit code for "run this again elsewhere" (boot.sh: stay counted; Batch: retry)
HEARTBEAT_EVERY_S = 15
HEARTBEAT_STALE_S = 10 * 60  # a heartbeat older than this means no worker is alive for the run
DEFAULT_GRACE_S = 90  # SIGTERM -> SIGKILL on a spot notice, cancel or limit
INPUT_COMPLETE = ".submitter-complete"  # written last under inputs/DIGEST/: the upload is whole
RUNTIME_ARTEFACT = "runtime.pyz"  # the instance runtime's file name, in S3 and on the host
SECRETS_ROOT = "/submitter"  # SSM Parameter Store path of every submission's secrets
# The job's metrics stream (JSON lines, SUBMITTER_METRICS_FILE): in a directory of its own, mounted at this path in
# a pool container; the agent ships at most METRICS_CAP bytes of it to Layout.metrics_stream.
METRICS_MOUNT = "/submitter-metrics"
METRICS_FILE = "metrics.jsonl"
FINAL_METRICS = "metrics.json"  # the job's final metrics, in its outputs directory (optional)
METRICS_CAP = 4 * 1024 * 1024
TIMELINE_MAX = 50  # the status document's `timeline` keeps this many of the latest attempts

TAG_SUBMISSION = "submitter:submission"
TAG_JOB = "submitter:job"
TAG_DEADLINE = "submitter:deadline"
# Which bucket and prefix hold the submission's documents: gc judges a resource only against those, so a
# teammate's submission in the same account (another bucket or prefix) is never taken for an orphan.
TAG_BUCKET = "submitter:bucket"
TAG_PREFIX = "submitter:prefix"
SSH_RULE_MARK = "submitter ssh"  # starts the description of a per-session port-22 rule: "... TOKEN until TIME"
TAG_SSH_UNTIL = "submitter:ssh-until"  # on an ssh session's own security group: gc removes it after this time

_ISO = "%Y-%m-%dT%H:%M:%SZ"


def iso(moment: datetime | None = None) -> str:
    """ISO 8601 UTC to the second (`2026-11-26T07:00:00Z`): every time in the contract."""
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime(_ISO)


def parse_iso(text: Any) -> datetime | None:
    try:
        return datetime.strptime(str(text), _ISO).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


def deadman_minutes(max_runtime: float | None, fallback: int = DEFAULT_DEADMAN_MINUTES) -> int:
    """Minutes from boot (or from a run's start) until the host powers itself off whatever happens."""
    if not max_runtime:
        return fallback
    return int(math.ceil((float(max_runtime) + DEADMAN_MARGIN_S) / 60.0))


def secrets_prefix(submission_id: str) -> str:
    return f"{SECRETS_ROOT}/{submission_id}/"


def chunk_name(number: int) -> str:
    return f"{number:06d}.log"


def next_chunk_number(keys: Iterable[str]) -> int:
    """The number after the highest `NNNNNN.log` among `keys`, so a resumed run's chunks continue in order."""
    numbers = [int(name[:-4]) for name in (k.rsplit("/", 1)[-1] for k in keys)
               if name.endswith(".log") and name[:-4].isdigit()]
    return max(numbers) + 1 if numbers else 0


# ----------------------------------------------------------------------------------------- S3 layout


@dataclass(frozen=True)
class Layout:
    """Every key under s3://BUCKET/PREFIX/. Prefix-like keys end with `/`; the rest name one object."""

    prefix: str

    def _key(self, *parts: str) -> str:
        return "/".join([self.prefix.strip("/"), *parts]) if self.prefix.strip("/") else "/".join(parts)

    @staticmethod
    def uri(bucket: str, key: str) -> str:
        return f"s3://{bucket}/{key}"

    # roots
    @property
    def submissions(self) -> str:
        return self._key("submissions") + "/"

    @property
    def runs(self) -> str:
        return self._key("runs") + "/"

    @property
    def inputs(self) -> str:
        return self._key("inputs") + "/"

    # one submission
    def submission(self, submission_id: str) -> str:
        return self._key("submissions", submission_id) + "/"

    def submission_doc(self, submission_id: str) -> str:
        return self._key("submissions", submission_id, "submission.json")

    def queued(self, submission_id: str) -> str:
        """Written once the runs are queued: makes a retried submit idempotent, and lists the runs."""
        return self._key("submissions", submission_id, "queued")

    def batch_record(self, submission_id: str) -> str:
        return self._key("submissions", submission_id, "batch.json")

    def batch_runs(self, submission_id: str) -> str:
        """The runs of a Batch submission by array index: [{run_id, index, env}] (run_message of each)."""
        return self._key("submissions", submission_id, "runs.json")

    def submission_cancel(self, submission_id: str) -> str:
        return self._key("submissions", submission_id, "cancel")

    def instances(self, submission_id: str) -> str:
        return self._key("submissions", submission_id, "instances") + "/"

    def instance_report(self, submission_id: str, instance_id: str) -> str:
        return self._key("submissions", submission_id, "instances", f"{instance_id}.json")

    def runtime(self, submission_id: str) -> str:
        return self._key("submissions", submission_id, RUNTIME_ARTEFACT)

    def index(self, submission_id: str) -> str:
        """The run index (runtime/index.py): one empty object per run state change, its name the table's row."""
        return self._key("submissions", submission_id, "index") + "/"

    def index_entry(self, submission_id: str, run_id: str, name: str = "") -> str:
        return self._key("submissions", submission_id, "index", run_id) + "/" + name

    # one run
    def run(self, run_id: str) -> str:
        return self._key("runs", run_id) + "/"

    def run_spec(self, run_id: str) -> str:
        return self._key("runs", run_id, "spec.json")

    def status(self, run_id: str) -> str:
        return self._key("runs", run_id, "status.json")

    def run_cancel(self, run_id: str) -> str:
        return self._key("runs", run_id, "cancel")

    def logs(self, run_id: str) -> str:
        return self._key("runs", run_id, "logs") + "/"

    def container_log(self, run_id: str) -> str:
        return self._key("runs", run_id, "logs", "container.log")

    def agent_log(self, run_id: str) -> str:
        return self._key("runs", run_id, "logs", "agent.log")

    def chunks(self, run_id: str) -> str:
        return self._key("runs", run_id, "logs", "chunks") + "/"

    def chunk(self, run_id: str, number: int) -> str:
        return self._key("runs", run_id, "logs", "chunks", chunk_name(number))

    def outputs(self, run_id: str) -> str:
        return self._key("runs", run_id, "outputs") + "/"

    def checkpoints(self, run_id: str) -> str:
        return self._key("runs", run_id, "checkpoints") + "/"

    def metrics_stream(self, run_id: str) -> str:
        """The job's metrics stream (SUBMITTER_METRICS_FILE), shipped while it runs and continued across attempts."""
        # Under logs/: the instance role may write there already (backends/policy.py); nothing else is opened.
        return self._key("runs", run_id, "logs", METRICS_FILE)

    def final_metrics(self, run_id: str) -> str:
        return self._key("runs", run_id, "outputs", FINAL_METRICS)

    # inputs, content-addressed
    def input(self, digest: str) -> str:
        return self._key("inputs", digest) + "/"

    def input_complete(self, digest: str) -> str:
        return self._key("inputs", digest, INPUT_COMPLETE)


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
