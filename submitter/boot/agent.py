#!/usr/bin/env python3
"""submitter's on-instance agent: takes runs from the submission's SQS queue, runs each in a container, and
leaves logs, checkpoints, outputs and status.json in S3, as docs/runtime-contract.md says.

Started once by the boot script, as root. Standard library only and Python 3.9 compatible (Amazon Linux
2023's python3); every AWS call goes through the `aws` CLI, so the instance role's credentials and the
standard endpoint variables (which is all the sandbox changes) apply without any code here.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("submitter.agent")

WORK_BASE = Path("/mnt/submitter")
DEVICES = ("/dev/sdf", "/dev/xvdf")  # the launch template maps /dev/sdf; Xen kernels rename it xvdf
DEVICE_WAIT = 60.0
RECEIVE_WAIT = 20
EMPTY_RECEIVES_TO_EXIT = 2
VISIBILITY = 300  # seconds a received run stays hidden from other workers; extended while it is ours
VISIBILITY_EVERY = 60.0
EXIT_INTERRUPTED = 75  # boot.sh: power off but stay counted in the group, so a replacement comes
TICK = 5.0  # spot notice, cancel, log chunks and limits are looked at this often
HEARTBEAT_EVERY = 15.0
CHECKPOINT_EVERY = 60.0
SYNC_TIMEOUT = 600  # one checkpoint sync may not run for ever; the next one picks up what it missed
DEADMAN_MARGIN = 900  # a run may overrun max_runtime by this much (stop, uploads) before the host powers off
CHUNK_HOLD = 256 * 1024  # a partial last line is held back from a log chunk until it is this long
NOTICE_RESERVE = 25  # seconds of a spot notice kept for the final uploads when it shortens the grace
TERMINAL = ("succeeded", "failed", "cancelled")


# ----------------------------------------------------------------------------------------- pure parts


def iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


def human_duration(seconds: float) -> str:
    """1800 -> '30m', 5400 -> '1h30m', 45 -> '45s': the way limits are written in a job spec."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def limit_reason(elapsed: float, cost: float, max_runtime: float | None, max_cost: float | None) -> str | None:
    """Why the run must be stopped now, or None while it is within its limits."""
    if max_runtime and elapsed >= max_runtime:
        return f"max_runtime {human_duration(max_runtime)} reached"
    if max_cost is not None and cost >= max_cost:
        return f"max_cost ${max_cost:.2f} reached"
    return None


def cost_of(price: float, seconds: float) -> float:
    return round(price * seconds / 3600.0, 6)


def deadman_minutes(max_runtime: float | None, fallback: int) -> int:
    if not max_runtime:
        return fallback
    return int(math.ceil((max_runtime + DEADMAN_MARGIN) / 60.0))


def stop_timeout(grace: int, action_time: datetime | None, now: datetime) -> int:
    """SIGTERM->SIGKILL grace, cut short so the uploads still fit before a spot reclaim."""
    if action_time is None:
        return grace
    left = (action_time - now).total_seconds() - NOTICE_RESERVE
    return max(5, min(grace, int(left)))


def update_status(doc: dict[str, Any], state: str, **fields: Any) -> dict[str, Any]:
    """A copy of status `doc` in `state`; a field given as None is removed (a new attempt clears the old end)."""
    out = dict(doc)
    out["state"] = state
    for name, value in fields.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def begin_attempt(prev: dict[str, Any], identity: dict[str, Any], now: str) -> tuple[dict[str, Any], bool]:
    """The `starting` document for a new attempt of a run, and whether the previous attempt was lost.

    Counters survive from `prev`. An attempt that was `starting`/`running` and never reported its end lost its
    worker without a notice (a reclaim, the dead-man switch, a host crash): it counts as an interruption,
    which also bounds a run that keeps killing its hosts.
    """
    lost = prev.get("state") in ("starting", "running")
    attempt = int(prev.get("attempt") or 0) + 1 if prev.get("started_at") else 1
    doc = update_status(
        prev, "starting", attempt=attempt,
        interruptions=int(prev.get("interruptions") or 0) + (1 if lost else 0),
        failures=int(prev.get("failures") or 0), cost=float(prev.get("cost") or 0.0),
        reason=None, exit_code=None, ended_at=None, heartbeat_at=now, **identity,
    )
    return doc, lost


def interruption_reason(interruptions: int, on_interruption: int) -> str | None:
    """None while another resume is allowed, else why the run gives up."""
    if interruptions <= on_interruption:
        return None
    return f"interrupted {interruptions} times; retries.on_interruption is {on_interruption}"


@dataclass(frozen=True)
class Ending:
    """How a run's container stopped: `kind` is exited, spot, host, cancel, limit, setup or error."""

    kind: str
    exit_code: int | None = None
    reason: str = ""


def decide_end(ending: Ending, doc: dict[str, Any], retries: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(state, fields to set, 'delete' or 'release') for the run's final status and its queue message."""
    if ending.kind in ("spot", "host"):
        interruptions = int(doc.get("interruptions") or 0) + 1
        given_up = interruption_reason(interruptions, int(retries.get("on_interruption", 0)))
        if given_up:
            return "failed", {"interruptions": interruptions, "reason": given_up}, "delete"
        return "interrupted", {"interruptions": interruptions, "reason": ending.reason}, "release"
    if ending.kind == "cancel":
        return "cancelled", {"reason": ending.reason or "cancelled"}, "delete"
    if ending.kind == "exited" and ending.exit_code == 0:
        return "succeeded", {"exit_code": 0, "reason": None}, "delete"
    reason = ending.reason or f"exit code {ending.exit_code}"
    fields: dict[str, Any] = {"reason": reason, "exit_code": ending.exit_code}
    failures = int(doc.get("failures") or 0)
    if ending.kind in ("exited", "error") and failures < int(retries.get("on_failure", 0)):
        fields["failures"] = failures + 1
        return "queued", fields, "release"
    return "failed", fields, "delete"


def data_path(target: str, volume_mount: str, data_dir: Path) -> Path:
    """Where on the host an input whose container path is `target` goes (below the data volume's dir)."""
    mount = "/" + volume_mount.strip("/")
    clean = "/" + target.strip("/")
    if clean != mount and not clean.startswith(mount.rstrip("/") + "/"):
        raise ValueError(f"input target {target} is not under volume_mount {volume_mount}")
    rel = clean[len(mount):].strip("/")
    if ".." in rel.split("/"):
        raise ValueError(f"input target {target} leaves volume_mount {volume_mount}")
    return data_dir / rel if rel else data_dir


def next_chunk_number(keys: list[str]) -> int:
    """The number after the highest `NNNNNN.log` among `keys`, so a resumed run's chunks continue in order."""
    numbers = [int(k.rsplit("/", 1)[-1][:-4]) for k in keys
               if k.endswith(".log") and k.rsplit("/", 1)[-1][:-4].isdigit()]
    return max(numbers) + 1 if numbers else 0


def chunk_name(number: int) -> str:
    return f"{number:06d}.log"


def split_chunk(pending: bytes, final: bool) -> tuple[bytes, bytes]:
    """(what to ship now, what to hold back): whole lines, unless it is the last chunk or a line is huge."""
    if final or len(pending) >= CHUNK_HOLD:
        return pending, b""
    cut = pending.rfind(b"\n") + 1
    return pending[:cut], pending[cut:]


def parse_json(text: str) -> dict[str, Any]:
    """An aws CLI JSON answer; some commands print nothing at all for an empty result."""
    text = text.strip()
    return json.loads(text) if text else {}


def parse_spot_price(answer: dict[str, Any]) -> float | None:
    history = answer.get("SpotPriceHistory") or []
    if not history:
        return None
    latest = max(history, key=lambda h: str(h.get("Timestamp", "")))
    try:
        return float(latest["SpotPrice"])
    except (KeyError, TypeError, ValueError):
        return None


def container_command(command: Any) -> list[str]:
    """The spec's command: exec form as is, a single string through the image's shell, none = image CMD."""
    if command is None or command == []:
        return []
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    return [str(part) for part in command]


def container_env(sub: dict[str, Any], message: dict[str, Any], attempt: int) -> dict[str, str]:
    env = {str(k): str(v) for k, v in (message.get("env") or {}).items()}
    env.update({
        "SUBMITTER_RUN_ID": str(message["run_id"]),
        "SUBMITTER_SUBMISSION_ID": str(sub["submission_id"]),
        "SUBMITTER_ATTEMPT": str(attempt),
        "SUBMITTER_DATA_DIR": sub.get("volume_mount") or "/data",
    })
    if sub.get("outputs"):
        env["SUBMITTER_OUTPUT_DIR"] = sub["outputs"]
    if sub.get("checkpoints"):
        env["SUBMITTER_CHECKPOINT_DIR"] = sub["checkpoints"]
    return env


def docker_run_args(sub: dict[str, Any], run_id: str, instance_id: str, work: Path, run_dir: Path,
                    env: dict[str, str], env_file: Path | None, gpus: str | None) -> list[str]:
    args = ["docker", "run", "--detach", "--name", f"submitter-{run_id}",
            "--label", f"submitter.run={run_id}", "--label", f"submitter.instance={instance_id}",
            "--volume", f"{work / 'data'}:{sub.get('volume_mount') or '/data'}"]
    if sub.get("outputs"):
        args += ["--volume", f"{run_dir / 'outputs'}:{sub['outputs']}"]
    if sub.get("checkpoints"):
        args += ["--volume", f"{run_dir / 'checkpoints'}:{sub['checkpoints']}"]
    for name, value in env.items():
        args += ["--env", f"{name}={value}"]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    if gpus:
        args += ["--gpus", gpus]
    return args + [sub["image"]] + container_command(sub.get("command"))


def gpu_flag(gpus: Any, runtimes: dict[str, Any]) -> str | None:
    """`--gpus` value: none when the spec says 0 or the host has no NVIDIA runtime (a CPU instance type)."""
    if gpus in (0, "0") or "nvidia" not in runtimes:
        return None
    return "all" if gpus in (None, "auto", "all") else str(gpus)


# ----------------------------------------------------------------------------------------- IMDS


class Imds:
    """IMDSv2: a session token from PUT /latest/api/token, sent with every GET."""

    def __init__(self, endpoint: str | None = None, ttl: int = 21600, timeout: float = 3.0) -> None:
        base = endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or "http://169.254.169.254"
        self.base = base.rstrip("/")
        self.ttl = ttl
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0

    def token(self) -> str:
        if self._token is None or time.monotonic() >= self._expires:
            request = urllib.request.Request(f"{self.base}/latest/api/token", method="PUT",
                                             headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.ttl)})
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                self._token = answer.read().decode()
            self._expires = time.monotonic() + self.ttl - 60
        return self._token

    def get(self, path: str) -> str | None:
        """The value at /latest/`path`, None when IMDS has none (404: e.g. no spot notice)."""
        for attempt in (1, 2):
            request = urllib.request.Request(f"{self.base}/latest/{path.lstrip('/')}",
                                             headers={"X-aws-ec2-metadata-token": self.token()})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    return str(answer.read().decode())
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code == 401 and attempt == 1:
                    self._token = None  # expired or revoked: one fresh token, then give up
                    continue
                raise
        return None

    def spot_action(self) -> dict[str, Any] | None:
        raw = self.get("meta-data/spot/instance-action")
        if not raw:
            return None
        try:
            return dict(json.loads(raw))
        except ValueError:
            return {"action": "terminate", "time": ""}


# ----------------------------------------------------------------------------------------- commands


@dataclass
class Result:
    code: int
    out: str
    err: str

    def last_line(self) -> str:
        lines = [line.strip() for line in (self.err or self.out).strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self.code}"


class CommandError(Exception):
    def __init__(self, what: str, result: Result) -> None:
        super().__init__(f"{what}: {result.last_line()}")
        self.result = result


def run(args: list[str], input: bytes | None = None, timeout: float | None = 300) -> Result:  # noqa: A002
    env = dict(os.environ, AWS_PAGER="")  # CLI v2 would otherwise page long answers
    # Output goes to files, not pipes: a command that leaves a child holding its stdout (`shutdown -h +N`
    # schedulers do) would otherwise keep us waiting for an end-of-file until the timeout.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(args, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                                  stdout=out, stderr=err, timeout=timeout, env=env, check=False)
        except FileNotFoundError:
            return Result(127, "", f"{args[0]}: command not found")
        except subprocess.TimeoutExpired:
            return Result(124, "", f"{' '.join(args[:3])} timed out after {timeout} s")
        out.seek(0)
        err.seek(0)
        return Result(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def not_found(result: Result) -> bool:
    return any(s in result.err for s in ("404", "Not Found", "NoSuchKey", "does not exist"))


class Cloud:
    """The AWS calls the agent makes, all through the `aws` CLI in the instance's region."""

    def __init__(self, region: str, bucket: str, prefix: str) -> None:
        self.region, self.bucket, self.prefix = region, bucket, prefix.strip("/")
        self.queue_url = ""

    def aws(self, *args: str, input: bytes | None = None, timeout: float | None = 300,  # noqa: A002
            check: bool = True) -> Result:
        endpoint: list[str] = []
        custom = os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
        if args[0] == "sqs" and custom:
            # AWS CLI v1 pins SQS to its legacy queue.amazonaws.com names and ignores the standard variable
            # (CLI v2 honours it); an explicit --endpoint-url is what both obey. Unset on AWS: no change there.
            endpoint = ["--endpoint-url", custom]
        result = run(["aws", "--region", self.region, "--output", "json", *endpoint, *args], input=input,
                     timeout=timeout)
        if check and result.code != 0:
            raise CommandError(f"aws {' '.join(args[:2])}", result)
        return result

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def read_json(self, *parts: str) -> dict[str, Any] | None:
        result = self.aws("s3", "cp", "--only-show-errors", self.uri(*parts), "-", check=False)
        if result.code != 0:
            if not_found(result):
                return None
            raise CommandError(f"reading {self.uri(*parts)}", result)
        return parse_json(result.out)

    def put_bytes(self, data: bytes, *parts: str, content_type: str = "text/plain") -> None:
        self.aws("s3", "cp", "--only-show-errors", "--content-type", content_type, "-", self.uri(*parts),
                 input=data)

    def put_json(self, doc: dict[str, Any], *parts: str) -> None:
        self.put_bytes(json.dumps(doc, indent=2).encode() + b"\n", *parts, content_type="application/json")

    def exists(self, *parts: str) -> bool:
        result = self.aws("s3api", "head-object", "--bucket", self.bucket, "--key", self.key(*parts),
                          check=False, timeout=60)
        if result.code != 0 and not not_found(result):
            log.warning("could not look for %s: %s", self.uri(*parts), result.last_line())
        return result.code == 0

    def list_keys(self, *parts: str) -> list[str]:
        answer = parse_json(self.aws("s3api", "list-objects-v2", "--bucket", self.bucket,
                                     "--prefix", self.key(*parts) + "/").out)
        return [str(item["Key"]) for item in answer.get("Contents") or []]

    def sqs(self, action: str, *args: str, timeout: float = 60) -> dict[str, Any]:
        return parse_json(self.aws("sqs", action, "--queue-url", self.queue_url, *args, timeout=timeout).out)


class Lease:
    """A received message kept invisible to other workers until it is deleted or released."""

    def __init__(self, cloud: Cloud, receipt: str) -> None:
        self.cloud, self.receipt = cloud, receipt
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="lease", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._done.wait(VISIBILITY_EVERY):
            try:
                self._visibility(VISIBILITY)
            except CommandError as exc:
                log.warning("could not extend the message's visibility: %s", exc)

    def _visibility(self, seconds: int) -> None:
        self.cloud.sqs("change-message-visibility", "--receipt-handle", self.receipt,
                       "--visibility-timeout", str(seconds))

    def _stop_keeping(self) -> None:
        self._done.set()
        # An extension still in flight must not land after the release and hide the run for 5 minutes.
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=120)

    def delete(self) -> None:
        self._stop_keeping()
        self.cloud.sqs("delete-message", "--receipt-handle", self.receipt)

    def release(self) -> None:
        """Visible again at once, so the next worker (or this one) takes the run up."""
        self._stop_keeping()
        self._visibility(0)

    def settle(self, action: str) -> None:
        self.delete() if action == "delete" else self.release()


# ----------------------------------------------------------------------------------------- host


class BootError(Exception):
    """The host cannot run anything (no data volume, registry refused): every run it receives fails."""


def prepare_volume(instance_id: str) -> Path:
    """Format the data volume if it is blank and mount it at the work root; returns the work root."""
    work = WORK_BASE / instance_id
    deadline = time.monotonic() + DEVICE_WAIT
    device = None
    while device is None:
        device = next((d for d in DEVICES if os.path.exists(d)), None)
        if device is None and time.monotonic() >= deadline:
            raise BootError(f"data volume {DEVICES[0]} did not mount: no {' or '.join(DEVICES)} "
                            f"after {int(DEVICE_WAIT)} s")
        if device is None:
            time.sleep(2)
    real = os.path.realpath(device)  # on Nitro, /dev/sdf is a udev link to the NVMe device
    work.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(str(work)):
        log.info("data volume already mounted at %s", work)
        return work
    if not run(["blkid", "-o", "value", "-s", "TYPE", real], timeout=30).out.strip():
        log.info("formatting %s (%s): it has no filesystem", device, real)
        result = run(["mkfs.ext4", "-q", real], timeout=600)
        if result.code != 0:
            raise BootError(f"data volume {device} did not mount: mkfs.ext4: {result.last_line()}")
    result = run(["mount", real, str(work)], timeout=60)
    if result.code != 0:
        raise BootError(f"data volume {device} did not mount: {result.last_line()}")
    log.info("data volume %s (%s) mounted at %s", device, real, work)
    return work


def pull_image(cloud: Cloud, registry: str | None, image: str) -> None:
    if registry:
        result = Result(1, "", "")
        for delay in (0, 5, 15):
            time.sleep(delay)
            password = cloud.aws("ecr", "get-login-password", check=False, timeout=60)
            if password.code != 0:
                result = password
                continue
            result = run(["docker", "login", "--username", "AWS", "--password-stdin", registry],
                         input=password.out.strip().encode(), timeout=120)
            if result.code == 0:
                break
        if result.code != 0:
            raise BootError(f"registry login refused: {result.last_line()}")
    for delay in (0, 5, 15):
        time.sleep(delay)
        result = run(["docker", "pull", "--quiet", image], timeout=3600)
        if result.code == 0:
            log.info("pulled %s", image)
            return
        log.warning("docker pull %s: %s", image, result.last_line())
    raise BootError(f"image pull refused: {result.last_line()}")


def docker_runtimes() -> dict[str, Any]:
    result = run(["docker", "info", "--format", "{{json .Runtimes}}"], timeout=60)
    try:
        return dict(json.loads(result.out)) if result.code == 0 else {}
    except ValueError:
        return {}


def rearm_deadman(minutes: int) -> None:
    """Push the host's power-off back so a long queue is not cut short, while a hung agent still stops."""
    run(["shutdown", "-c"], timeout=30)
    result = run(["shutdown", "-h", f"+{minutes}", "submitter: dead-man switch"], timeout=30)
    log.info("dead-man switch re-armed: power off in %d min%s", minutes,
             "" if result.code == 0 else f" (failed: {result.last_line()})")


# ----------------------------------------------------------------------------------------- one run


@dataclass
class RunState:
    """The run this worker holds: its message, its status document, and its local paths."""

    run_id: str
    message: dict[str, Any]
    lease: Lease
    status: dict[str, Any]
    dir: Path
    container: str
    started: float = 0.0  # monotonic time the container started (0: not started)
    base_cost: float = 0.0  # what earlier attempts of the run cost
    logs: LogShipper | None = None
    handler: logging.Handler | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class LogShipper:
    """Follows the container's log into a local file and ships what is new as numbered S3 chunks."""

    def __init__(self, cloud: Cloud, run_id: str, path: Path, number: int) -> None:
        self.cloud, self.run_id, self.path, self.number = cloud, run_id, path, number
        self.offset = path.stat().st_size if path.exists() else 0  # earlier attempts' log is already shipped
        self.follower: subprocess.Popen[bytes] | None = None

    def follow(self, container: str) -> None:
        with self.path.open("ab") as sink:
            self.follower = subprocess.Popen(["docker", "logs", "--follow", container], stdout=sink,
                                             stderr=subprocess.STDOUT)

    def ship(self, final: bool = False) -> None:
        with self.path.open("rb") as source:
            source.seek(self.offset)
            piece, _ = split_chunk(source.read(), final)
        if not piece:
            return
        self.cloud.put_bytes(piece, "runs", self.run_id, "logs", "chunks", chunk_name(self.number))
        self.number += 1
        self.offset += len(piece)

    def finish(self) -> None:
        if self.follower is not None:
            try:
                self.follower.wait(timeout=30)  # ends by itself once the container has stopped
            except subprocess.TimeoutExpired:
                self.follower.kill()
        self.ship(final=True)
        self.cloud.aws("s3", "cp", "--only-show-errors", str(self.path),
                       self.cloud.uri("runs", self.run_id, "logs", "container.log"))


class Agent:
    """One worker: boot the host once, then take runs from the queue until it is empty or EC2 reclaims it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cloud = Cloud(args.region, args.bucket, args.prefix)
        self.imds = Imds()
        self.sub: dict[str, Any] = {}
        self.work = WORK_BASE / args.instance_id
        self.identity: dict[str, Any] = {"instance_id": args.instance_id}
        self.price = 0.0
        self.boot_error: str | None = None
        self.restored: set[tuple[str, str]] = set()
        self.current: RunState | None = None
        self.handled: list[dict[str, str]] = []
        self.host_stopping = False
        self.rebalance_seen = False

    # -------------------------------------------------------------------------------- top level

    def main(self) -> int:
        try:
            return self.serve()
        except Exception as exc:  # never die silently: the run and the instance report say why
            log.exception("agent error")
            reason = f"agent error: {type(exc).__name__}: {exc}"
            if self.current is not None:
                self.abort(self.current, reason)
            self.report("agent-error", reason)
            return 3

    def serve(self) -> int:
        self.sub = self.cloud.read_json("submissions", self.args.submission, "submission.json") or {}
        if not self.sub:
            raise RuntimeError(f"no {self.cloud.uri('submissions', self.args.submission, 'submission.json')}")
        self.boot()
        self.cloud.queue_url = str(parse_json(self.cloud.aws(
            "sqs", "get-queue-url", "--queue-name", self.sub["queue_name"]).out)["QueueUrl"])
        empty = 0
        while empty < EMPTY_RECEIVES_TO_EXIT and not self.host_stopping:
            answer = self.cloud.sqs(
                "receive-message", "--wait-time-seconds", str(RECEIVE_WAIT), "--max-number-of-messages", "1",
                "--attribute-names", "ApproximateReceiveCount", "--visibility-timeout", str(VISIBILITY),
                timeout=RECEIVE_WAIT + 40)
            messages = answer.get("Messages") or []
            if not messages:
                empty += 1
                continue
            empty = 0
            ending = self.handle(messages[0])
            if ending is not None and ending.kind in ("spot", "host"):
                self.report("interrupted", ending.reason)
                # The boot script powers off without leaving the group: the group replaces this worker,
                # and the replacement resumes the run just put back on the queue.
                return EXIT_INTERRUPTED
        if self.boot_error:
            self.report("boot-failed", self.boot_error)
            return 1
        if self.host_stopping:
            # Not a drained queue: the host is going away under us (a reclaim, a shutdown). Stay counted in
            # the group so whatever is left on the queue gets a worker.
            self.report("stopped", "the host is shutting down")
            return EXIT_INTERRUPTED
        else:
            self.report("drained", "the queue is empty")
        return 0

    def boot(self) -> None:
        for name, path in (("instance_type", "meta-data/instance-type"),
                           ("availability_zone", "meta-data/placement/availability-zone")):
            try:
                self.identity[name] = self.imds.get(path) or "unknown"
            except (OSError, urllib.error.URLError) as exc:
                log.warning("IMDS %s: %s", path, exc)
                self.identity[name] = "unknown"
        self.price = self.spot_price()
        log.info("instance %s (%s in %s), spot price $%.4f/h", self.args.instance_id,
                 self.identity["instance_type"], self.identity["availability_zone"], self.price)
        try:
            self.work = prepare_volume(self.args.instance_id)
            (self.work / "data").mkdir(exist_ok=True)
            (self.work / "data").chmod(0o777)  # a job whose image runs as a non-root user may write there
            pull_image(self.cloud, self.sub.get("registry"), self.sub["image"])
        except BootError as exc:
            self.boot_error = str(exc)
            log.error("boot failed: %s; every run this worker receives is marked failed", exc)

    def spot_price(self) -> float:
        result = self.cloud.aws(
            "ec2", "describe-spot-price-history", "--instance-types", str(self.identity["instance_type"]),
            "--availability-zone", str(self.identity["availability_zone"]),
            "--product-descriptions", "Linux/UNIX", "--start-time", iso(), "--max-items", "1",
            check=False, timeout=60)
        price = parse_spot_price(parse_json(result.out)) if result.code == 0 else None
        if price is None:
            log.warning("no spot price for this instance (%s): cost is reported as 0", result.last_line())
        return price or 0.0

    def report(self, state: str, reason: str) -> None:
        doc = {**self.identity, "state": state, "reason": reason, "time": iso(), "runs": self.handled}
        try:
            self.cloud.put_json(doc, "submissions", self.args.submission, "instances",
                                f"{self.args.instance_id}.json")
        except CommandError as exc:
            log.error("could not write the instance report: %s", exc)

    # -------------------------------------------------------------------------------- one message

    def handle(self, message: dict[str, Any]) -> Ending | None:
        lease = Lease(self.cloud, str(message["ReceiptHandle"]))
        try:
            body = json.loads(message["Body"])
            run_id = str(body["run_id"])
        except (ValueError, KeyError, TypeError) as exc:  # would fail on every worker: drop it, say so
            log.error("dropping a message that names no run (%s): %.200s", exc, message.get("Body"))
            lease.delete()
            return None
        prev = self.cloud.read_json("runs", run_id, "status.json") or {}
        base = {"run_id": run_id, "submission_id": self.sub["submission_id"], "job": self.sub.get("job", "")}
        prev = {**base, **prev}
        log.info("run %s: received (receive count %s, state %s)", run_id,
                 message.get("Attributes", {}).get("ApproximateReceiveCount", "?"), prev.get("state", "none"))
        if prev.get("state") in TERMINAL:
            log.info("run %s is already %s: dropping a duplicate message", run_id, prev["state"])
            lease.delete()
            return None
        run_dir = self.work / "runs" / run_id
        state = RunState(run_id, body, lease, prev, run_dir, f"submitter-{run_id}")
        self.current = state  # left set if attempt() raises: main() settles the run then
        ending = self.attempt(state)
        self.current = None
        return ending

    def attempt(self, state: RunState) -> Ending:
        if self.cancelled(state.run_id):
            return self.conclude(state, Ending("cancel", reason="cancelled before it started"))
        if self.boot_error:
            return self.conclude(state, Ending("setup", reason=self.boot_error))
        for sub in ("outputs", "checkpoints", "logs"):
            (state.dir / sub).mkdir(parents=True, exist_ok=True)
            (state.dir / sub).chmod(0o777)  # the container's user need not be root
        self.attach_log(state)
        rearm_deadman(deadman_minutes(self.sub.get("max_runtime"), int(self.sub.get("deadman_minutes") or 60)))
        previous = state.status.get("instance_id")
        identity = {**self.identity, "price": self.price}
        state.status, lost = begin_attempt(state.status, identity, iso())
        state.base_cost = float(state.status.get("cost") or 0.0)
        if lost:
            log.warning("the previous attempt (on %s) ended without a report: counted as an interruption",
                        previous)
            given_up = interruption_reason(int(state.status["interruptions"]),
                                           int(self.retries().get("on_interruption", 0)))
            if given_up:
                return self.conclude(state, Ending("setup", reason=given_up))
        self.write_status(state)
        log.info("run %s: attempt %s on %s", state.run_id, state.status["attempt"], self.args.instance_id)
        try:
            self.restore(state)
            self.start_container(state)
        except (CommandError, ValueError, OSError) as exc:
            log.error("run %s could not start: %s", state.run_id, exc)
            return self.conclude(state, Ending("setup", reason=str(exc)))
        return self.conclude(state, self.watch(state))

    def retries(self) -> dict[str, Any]:
        return dict(self.sub.get("retries") or {})

    def cancelled(self, run_id: str, which: int | None = None) -> bool:
        checks = [("submissions", self.args.submission, "cancel"), ("runs", run_id, "cancel")]
        if which is not None:
            checks = [checks[which % 2]]
        return any(self.cloud.exists(*parts) for parts in checks)

    def attach_log(self, state: RunState) -> None:
        """The run's agent.log: earlier attempts' lines first, then this worker's."""
        path = state.dir / "logs" / "agent.log"
        self.cloud.aws("s3", "cp", "--only-show-errors", self.cloud.uri("runs", state.run_id, "logs", "agent.log"),
                       str(path), check=False)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
        state.handler = handler

    def write_status(self, state: RunState) -> None:
        self.cloud.put_json(state.status, "runs", state.run_id, "status.json")

    def restore(self, state: RunState) -> None:
        mount = self.sub.get("volume_mount") or "/data"
        for item in self.sub.get("inputs") or []:
            uri, target = str(item["uri"]), str(item["target"])
            dest = data_path(target, mount, self.work / "data")
            if (uri, target) in self.restored:
                log.info("input %s is already at %s", uri, target)
                continue
            if item.get("kind", "dir") == "dir":
                dest.mkdir(parents=True, exist_ok=True)
                self.cloud.aws("s3", "cp", "--recursive", "--only-show-errors", uri, str(dest), timeout=None)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.cloud.aws("s3", "cp", "--only-show-errors", uri, str(dest), timeout=None)
            self.restored.add((uri, target))
            log.info("input %s restored to %s", uri, target)
        if self.sub.get("checkpoints"):
            self.cloud.aws("s3", "sync", "--only-show-errors", self.cloud.uri("runs", state.run_id, "checkpoints"),
                           str(state.dir / "checkpoints"), timeout=None)
            count = sum(1 for p in (state.dir / "checkpoints").rglob("*") if p.is_file())
            log.info("checkpoints restored: %d file(s)", count)
        container_log = state.dir / "logs" / "container.log"
        self.cloud.aws("s3", "cp", "--only-show-errors",
                       self.cloud.uri("runs", state.run_id, "logs", "container.log"), str(container_log), check=False)
        number = next_chunk_number(self.cloud.list_keys("runs", state.run_id, "logs", "chunks"))
        state.logs = LogShipper(self.cloud, state.run_id, container_log, number)

    def write_secrets(self, state: RunState) -> Path | None:
        spec = self.sub.get("secrets") or {}
        names = [str(n) for n in spec.get("names") or []]
        if not names:
            return None
        prefix = "/" + str(spec.get("ssm_prefix", "")).strip("/") + "/"
        values: dict[str, str] = {}
        for start in range(0, len(names), 10):  # GetParameters takes at most 10 names
            answer = parse_json(self.cloud.aws("ssm", "get-parameters", "--with-decryption", "--names",
                                               *[prefix + n for n in names[start:start + 10]]).out)
            values.update({str(p["Name"])[len(prefix):]: str(p["Value"]) for p in answer.get("Parameters") or []})
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"secret(s) {', '.join(missing)} not found in SSM under {prefix}")
        if any("\n" in v for v in values.values()):
            raise ValueError("a secret holds a line break, which docker's --env-file cannot carry")
        path = self.work / f".secrets-{state.run_id}.env"
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as sink:
            sink.writelines(f"{name}={values[name]}\n" for name in names)
        log.info("secrets %s written for the container (values not logged)", ", ".join(names))
        return path

    def start_container(self, state: RunState) -> None:
        run(["docker", "rm", "--force", state.container], timeout=120)  # an earlier attempt on this host
        env = container_env(self.sub, state.message, int(state.status["attempt"]))
        gpus = gpu_flag(self.sub.get("gpus", "auto"), docker_runtimes())
        env_file = self.write_secrets(state)
        try:
            args = docker_run_args(self.sub, state.run_id, self.args.instance_id, self.work, state.dir, env,
                                   env_file, gpus)
            result = run(args, timeout=600)
        finally:
            if env_file is not None:
                env_file.unlink()  # docker has read it; the values now live only in the container
        if result.code != 0:
            raise CommandError("the container did not start", result)
        state.started = time.monotonic()
        assert state.logs is not None
        state.logs.follow(state.container)
        state.status = update_status(state.status, "running", started_at=iso(), heartbeat_at=iso())
        self.write_status(state)
        log.info("run %s: container %s started (env %s%s)", state.run_id, state.container,
                 ", ".join(sorted(env)), f"; --gpus {gpus}" if gpus else "")

    # -------------------------------------------------------------------------------- while it runs

    def cost(self, state: RunState) -> float:
        elapsed = time.monotonic() - state.started if state.started else 0.0
        return round(state.base_cost + cost_of(self.price, elapsed), 6)

    def watch(self, state: RunState) -> Ending:
        waiter = subprocess.Popen(["docker", "wait", state.container], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        sync: threading.Thread | None = None
        tick = 0
        last_heartbeat = last_sync = time.monotonic()
        max_runtime, max_cost = self.sub.get("max_runtime"), self.sub.get("max_cost")
        while True:
            try:
                out, _ = waiter.communicate(timeout=TICK)
                code = int(out.decode().strip() or "-1")
                log.info("run %s: container exited with %d", state.run_id, code)
                return Ending("exited", code)
            except subprocess.TimeoutExpired:
                pass
            except ValueError:
                return Ending("exited", -1, "the container's exit code is unknown")
            tick += 1
            ending = self.check(state, tick, max_runtime, max_cost)
            if ending is not None:
                log.warning("run %s: stopping (%s)", state.run_id, ending.reason)
                self.stop(state)
                waiter.kill()
                return ending
            now = time.monotonic()
            try:
                assert state.logs is not None
                state.logs.ship()
                if now - last_heartbeat >= HEARTBEAT_EVERY:
                    last_heartbeat = now
                    state.status = update_status(state.status, "running", heartbeat_at=iso(),
                                                 cost=self.cost(state))
                    self.write_status(state)
            except CommandError as exc:
                log.warning("run %s: %s", state.run_id, exc)  # S3 hiccup: the next tick tries again
            if self.sub.get("checkpoints") and now - last_sync >= CHECKPOINT_EVERY and not (
                    sync and sync.is_alive()):
                last_sync = now
                sync = threading.Thread(target=self.sync_checkpoints, args=(state,), daemon=True)
                sync.start()
                state.extra["sync"] = sync

    def check(self, state: RunState, tick: int, max_runtime: Any, max_cost: Any) -> Ending | None:
        """Why to stop now (spot notice, host shutdown, cancel, a limit), or None."""
        try:
            action = self.imds.spot_action()
            if action:
                state.extra["action_time"] = parse_iso(str(action.get("time", "")))
                return Ending("spot", reason=f"spot interruption notice ({action.get('action')} at "
                                             f"{action.get('time')})")
            if not self.rebalance_seen and self.imds.get("meta-data/events/recommendations/rebalance"):
                self.rebalance_seen = True
                log.warning("EC2 recommends a rebalance: this host's capacity is at elevated risk")
        except (OSError, urllib.error.URLError) as exc:
            log.warning("IMDS: %s", exc)
        if self.host_stopping:
            return Ending("host", reason="the host is shutting down")
        # The two cancel objects are looked for on alternate ticks: half the aws CLI processes, <= 10 s late.
        if self.cancelled(state.run_id, which=tick):
            return Ending("cancel", reason="cancelled")
        elapsed = time.monotonic() - state.started
        reason = limit_reason(elapsed, self.cost(state), max_runtime, max_cost)
        return Ending("limit", reason=reason) if reason else None

    def sync_checkpoints(self, state: RunState) -> None:
        result = self.cloud.aws("s3", "sync", "--only-show-errors", str(state.dir / "checkpoints"),
                                self.cloud.uri("runs", state.run_id, "checkpoints"), check=False,
                                timeout=SYNC_TIMEOUT)
        if result.code != 0:
            log.warning("checkpoint sync: %s", result.last_line())

    def stop(self, state: RunState) -> None:
        grace = stop_timeout(int(self.sub.get("grace_seconds") or 90), state.extra.get("action_time"),
                             datetime.now(timezone.utc))
        result = run(["docker", "stop", "--time", str(grace), state.container], timeout=grace + 60)
        if result.code != 0:
            log.warning("docker stop: %s", result.last_line())

    # -------------------------------------------------------------------------------- the end

    def conclude(self, state: RunState, ending: Ending) -> Ending:
        """Everything a run leaves whatever happened: logs, outputs, checkpoints, status, the message."""
        exit_code = ending.exit_code
        if state.started:
            inspected = run(["docker", "inspect", "--format", "{{.State.ExitCode}}", state.container], timeout=60)
            if inspected.code == 0 and inspected.out.strip().lstrip("-").isdigit():
                exit_code = int(inspected.out.strip())
            ending = Ending(ending.kind, exit_code, ending.reason)
            self.upload_results(state)
        status_state, fields, action = decide_end(ending, state.status, self.retries())
        fields.update({k: v for k, v in self.identity.items() if k not in state.status})
        state.status = update_status(state.status, status_state, ended_at=iso(), heartbeat_at=iso(),
                                     cost=self.cost(state), **fields)
        if exit_code is not None:
            state.status["exit_code"] = exit_code
        self.write_status(state)
        state.lease.settle(action)
        log.info("run %s: %s%s; message %sd", state.run_id, status_state,
                 f" ({fields['reason']})" if fields.get("reason") else "", action)
        self.handled.append({"run_id": state.run_id, "state": status_state})
        self.close(state)
        return ending

    def upload_results(self, state: RunState) -> None:
        steps: list[tuple[str, Callable[[], Any]]] = []
        if state.logs is not None:
            steps.append(("container log", state.logs.finish))
        if self.sub.get("outputs"):
            steps.append(("outputs", lambda: self.cloud.aws(
                "s3", "sync", "--only-show-errors", str(state.dir / "outputs"),
                self.cloud.uri("runs", state.run_id, "outputs"), timeout=None)))
        if self.sub.get("checkpoints"):
            steps.append(("checkpoints", lambda: self.sync_checkpoints(state)))
        periodic = state.extra.get("sync")
        if periodic is not None:
            periodic.join(timeout=SYNC_TIMEOUT)  # the final sync must not race the last periodic one
        for what, step in steps:
            try:
                step()
            except (CommandError, OSError) as exc:  # one failed upload must not cost the others
                log.error("run %s: uploading the %s failed: %s", state.run_id, what, exc)

    def close(self, state: RunState) -> None:
        if state.handler is not None:
            state.handler.flush()
            self.cloud.aws("s3", "cp", "--only-show-errors", str(state.dir / "logs" / "agent.log"),
                           self.cloud.uri("runs", state.run_id, "logs", "agent.log"), check=False)
            logging.getLogger().removeHandler(state.handler)
            state.handler.close()
        run(["docker", "rm", "--force", state.container], timeout=120)
        shutil.rmtree(state.dir, ignore_errors=True)

    def abort(self, state: RunState, reason: str) -> None:
        """After an agent error: stop the container, keep what it made, and settle the run and message."""
        try:
            if state.started:
                self.stop(state)
            self.conclude(state, Ending("error", reason=reason))
        except Exception:
            log.exception("run %s: could not settle it after the agent error", state.run_id)
            try:
                state.lease.release()  # the visibility timeout would return it anyway; sooner is better
            except Exception:
                log.exception("could not release the message")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("submission", "bucket", "prefix", "group", "instance-id", "region"):
        parser.add_argument(f"--{name}", required=name != "prefix", default="")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s agent %(levelname)s %(message)s")
    agent = Agent(parse_args(sys.argv[1:] if argv is None else argv))

    def on_term(signum: int, frame: Any) -> None:
        log.warning("signal %d: the host is shutting down", signum)
        agent.host_stopping = True

    signal.signal(signal.SIGTERM, on_term)
    return agent.main()


if __name__ == "__main__":
    sys.exit(main())
