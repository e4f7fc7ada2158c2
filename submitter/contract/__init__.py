"""The runtime contract: what the submit side and the instance runtime agree on (S3 layout, run states, the
status document, shared constants). docs/runtime-contract.md is its prose.

Standard library only and Python 3.9 compatible: it ships inside the instance runtime artefact unchanged.
No module outside this package spells a key path, a state name or `status.json`. Here: the states, constants,
times and the S3 layout; documents.py: the documents (status, queue message, run record) and the names read
back from keys; ledger.py: the budget ledger's keys read back. Everything is re-exported: `contract.Status`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from submitter.contract.documents import Status

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
CHECKPOINT_MANIFEST_VERSION = 1
CHECKPOINT_WARN_AFTER_S = 30 * 60  # limits.checkpoint_warn_after's default: no new checkpoint for this long warns

TAG_SUBMISSION = "submitter:submission"
TAG_JOB = "submitter:job"
TAG_DEADLINE = "submitter:deadline"
# Which bucket and prefix hold the submission's documents: gc judges a resource only against those, so a
# teammate's submission in the same account (another bucket or prefix) is never taken for an orphan.
TAG_BUCKET = "submitter:bucket"
TAG_PREFIX = "submitter:prefix"
SSH_RULE_MARK = "submitter ssh"  # starts the description of a per-session port-22 rule: "... TOKEN until TIME"
TAG_SSH_UNTIL = "submitter:ssh-until"  # on an ssh session's own security group: gc removes it after this time
# A failed run's kept instance (limits.keep_on_failure): the worker tags itself with its window's end; until then
# neither cancel-less clean-up nor gc terminates it. The run's status carries the same end (KEPT_UNTIL) and, once
# the window is over, when and why it ended (KEPT_ENDED, KEPT_END_REASON).
TAG_KEEP_UNTIL = "submitter:keep-until"
# A warm image cache (`submitter cache`, docs/image.md): the EBS snapshot of a data volume holding the pulled image,
# tagged with the image's digest (the cache key) and when it was made; the volume holds CACHE_MARKER at its root.
TAG_CACHE_IMAGE, TAG_CACHE_CREATED = "submitter:cache-image", "submitter:cache-created"
CACHE_MARKER = "submitter-cache.json"
CACHE_READY = "cache-ready"  # the cache builder's instance report: the volume holds the image, unmounted
# The boot's install step on a warm cache: the builder downloads the packages it installs (the AWS CLI, e2fsprogs)
# into CACHE_PACKAGES_HOST and its runtime copies them to CACHE_PACKAGES on the volume; a worker booting on a
# volume restored from the snapshot installs them from there with no repository (runtime/boot.sh).
CACHE_PACKAGES_HOST, CACHE_PACKAGES = "/var/cache/submitter-packages", "submitter-packages"
# The host's data volume: the launch template maps /dev/sdf (Xen kernels name it xvdf), mounted at WORK_BASE/ID.
DATA_DEVICES = ("/dev/sdf", "/dev/xvdf")
WORK_BASE = "/mnt/submitter"
KEPT_UNTIL, KEPT_ENDED, KEPT_END_REASON = "kept_until", "kept_ended_at", "kept_end_reason"
KEPT = "kept"  # instance report state: the worker kept its failed run's instance, then ended
KEEP_MARGIN_S = 5 * 60  # the dead-man switch powers a kept host off this long after its window, if the agent hangs
MAX_KEEP_S = 24 * 3600  # limits.keep_on_failure's upper bound; a keep-until tag further out is not believed

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


def keep_until(text: Any, now: datetime | None = None) -> datetime | None:
    """The end of a kept instance's window (a keep-until tag or a status's kept_until) while it is still open;
    None once it has passed, or when the value is no time or lies further out than any window can (a forged tag
    must not shield an instance from clean-up)."""
    until = parse_iso(text)
    now = now or datetime.now(timezone.utc)
    if until is None or until <= now or until > now + timedelta(seconds=MAX_KEEP_S + KEEP_MARGIN_S):
        return None
    return until


def kept_window(status: Status, now: datetime | None = None) -> datetime | None:
    """The open window's end when `status` is a failed run whose instance is kept now, else None."""
    if status.state != FAILED or status.extra.get(KEPT_ENDED):
        return None
    return keep_until(status.extra.get(KEPT_UNTIL), now)


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
        """The metrics a job writes last as OUTPUT_DIR/metrics.json (train.py does): `compare` and `diff` read it."""
        return self._key("runs", run_id, "outputs", FINAL_METRICS)

    def checkpoint_manifests(self, run_id: str) -> str:
        return self._key("runs", run_id, "checkpoints", "manifests") + "/"

    def checkpoint_manifest(self, run_id: str, number: int) -> str:
        """Written last by a checkpoint sync: it names only files already whole in S3 (runtime/checkpoints.py)."""
        return self._key("runs", run_id, "checkpoints", "manifests", f"{number:06d}.json")

    def checkpoint_generation(self, run_id: str, number: int) -> str:
        """The files a sync uploaded under their own names; a later sync never overwrites a kept generation."""
        return self._key("runs", run_id, "checkpoints", "generations", f"{number:06d}") + "/"

    # inputs, content-addressed
    def input(self, digest: str) -> str:
        return self._key("inputs", digest) + "/"

    def input_complete(self, digest: str) -> str:
        return self._key("inputs", digest, INPUT_COMPLETE)

    # the account's spend ledger (SUBMITTER_BUDGET): one object per run attempt, its cost in its name, so a
    # month is summed from one listing without reading any object (docs/decisions.md, "The monthly budget")
    @property
    def ledgers(self) -> str:
        return self._key("ledger") + "/"

    def ledger(self, month: str) -> str:
        return self._key("ledger", month) + "/"

    def ledger_entry(self, month: str, run_id: str, attempt: int, cost: float) -> str:
        return self._key("ledger", month, run_id, f"attempt-{int(attempt)}", f"{max(cost, 0.0):.6f}.json")


# The rest of the contract, re-exported so every reader writes `contract.NAME` (they import the names above).
from submitter.contract.documents import *  # noqa: E402,F403
from submitter.contract.ledger import *  # noqa: E402,F403
