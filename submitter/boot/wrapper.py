#!/usr/bin/env python3
"""submitter's in-container wrapper for the AWS Batch backend: one Batch job attempt of one run, leaving the same
logs, checkpoints, outputs and status.json in S3 as the worker pool's agent (docs/runtime-contract.md).

On Batch there is no host of ours, so the job container does what the agent does around `docker run`: restore
inputs and checkpoints, run the command, stream its log and a heartbeat, sync checkpoints, upload outputs, and
settle status.json. The job definition's bootstrap fetches this file and agent.py (whose pure helpers it uses:
one set of rules for attempts, interruptions, failures and limits) from the submission's S3 prefix.

Standard library plus boto3 when the image has it, else the AWS CLI (docs/batch.md). Python 3.9 compatible.
Exit codes: 0 the run succeeded; 75 another Batch attempt is wanted (the job definition retries on it);
anything else ends the job (status.json says why).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    from submitter.boot import agent as shared
except ImportError:  # in the job container: agent.py was downloaded next to this file
    import agent as shared  # type: ignore[no-redef]

log = logging.getLogger("submitter.wrapper")

RETRY_EXIT = 75
TICK = 5.0
HEARTBEAT_EVERY = 15.0
CHECKPOINT_EVERY = 60.0
STOP_GRACE = 20  # Batch sends SIGKILL 30 s after its SIGTERM; the uploads need the rest
WORK = Path("/tmp/submitter-run")


# ----------------------------------------------------------------------------------------- pure parts


def pick_run(runs: list[dict[str, Any]], environ: Mapping[str, str]) -> dict[str, Any]:
    """This job's run: the array child's index into runs.json, or the only run of a plain job."""
    index = int(environ.get("AWS_BATCH_JOB_ARRAY_INDEX") or 0)
    if not 0 <= index < len(runs):
        raise ValueError(f"array index {index} is outside the submission's {len(runs)} run(s)")
    return dict(runs[index])


def final_attempt(environ: Mapping[str, str]) -> bool:
    """True when Batch has no attempt left after this one (retryStrategy.attempts)."""
    return int(environ.get("AWS_BATCH_JOB_ATTEMPT") or 1) >= int(environ.get("SUBMITTER_BATCH_ATTEMPTS") or 1)


def settle(state: str, fields: dict[str, Any], action: str, last: bool) -> tuple[str, dict[str, Any], int]:
    """(state, fields, exit code) from the agent's decision. 'release' (run it again) becomes exit 75, which the
    job definition retries, unless Batch has no attempt left: then the run fails and says so."""
    if action == "release":
        if not last:
            return state, fields, RETRY_EXIT
        reason = fields.get("reason") or state
        return "failed", {**fields, "reason": f"{reason}; no AWS Batch attempt left"}, 1
    return state, fields, 0 if state == "succeeded" else 1


def child_env(base: Mapping[str, str], sub: dict[str, Any], run: dict[str, Any], attempt: int,
              secrets: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("SUBMITTER_")}
    env.update(secrets)
    env.update(shared.container_env(sub, run, attempt))
    return env


# ----------------------------------------------------------------------------------------- S3 access


class Store:
    """The submission's S3 objects (keys relative to the prefix), through boto3."""

    def __init__(self, bucket: str, prefix: str, region: str) -> None:
        import boto3

        self.bucket, self.prefix, self.region = bucket, prefix.strip("/"), region
        self.s3 = boto3.client("s3", region_name=region)
        self._session = boto3

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel.lstrip('/')}" if self.prefix else rel.lstrip("/")

    def get_bytes(self, rel: str) -> bytes | None:
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None

    def put_bytes(self, rel: str, data: bytes, content_type: str = "text/plain") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data, ContentType=content_type)

    def exists(self, rel: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=self.key(rel))
        except ClientError:
            return False
        return True

    def keys(self, rel: str) -> list[str]:
        found: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key(rel)):
            found += [str(o["Key"]) for o in page.get("Contents", [])]
        return found

    def download(self, uri: str, dest: Path, kind: str) -> int:
        """s3://bucket/key (kind file) or s3://bucket/prefix/ (kind dir) to `dest`; returns files fetched."""
        bucket, _, key = uri[len("s3://"):].partition("/")
        if kind == "file":
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(bucket, key, str(dest))
            return 1
        count = 0
        prefix = key if key.endswith("/") or not key else key + "/"
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                rel = str(item["Key"])[len(prefix):]
                if not rel or rel.endswith("/"):
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, str(item["Key"]), str(target))
                count += 1
        return count

    def upload_tree(self, local: Path, rel: str, seen: dict[str, tuple[int, int]]) -> int:
        """Upload the files of `local` that are new or changed since the last call with the same `seen`."""
        count = 0
        if not local.is_dir():
            return 0
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            info = path.stat()
            name = path.relative_to(local).as_posix()
            if seen.get(name) == (info.st_size, info.st_mtime_ns):
                continue
            self.s3.upload_file(str(path), self.bucket, self.key(f"{rel.rstrip('/')}/{name}"))
            seen[name] = (info.st_size, info.st_mtime_ns)
            count += 1
        return count

    def secrets(self, names: list[str], ssm_prefix: str) -> dict[str, str]:
        ssm = self._session.client("ssm", region_name=self.region)
        prefix = "/" + ssm_prefix.strip("/") + "/"
        values: dict[str, str] = {}
        for start in range(0, len(names), 10):  # GetParameters takes at most 10 names
            answer = ssm.get_parameters(Names=[prefix + n for n in names[start:start + 10]], WithDecryption=True)
            values.update({str(p["Name"])[len(prefix):]: str(p["Value"]) for p in answer.get("Parameters", [])})
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"secret(s) {', '.join(missing)} not found in SSM under {prefix}")
        return values

    def spot_price(self, instance_type: str, zone: str) -> float:
        ec2 = self._session.client("ec2", region_name=self.region)
        answer = ec2.describe_spot_price_history(InstanceTypes=[instance_type], AvailabilityZone=zone,
                                                 ProductDescriptions=["Linux/UNIX"], MaxResults=1)
        history = [{"SpotPrice": h["SpotPrice"], "Timestamp": str(h["Timestamp"])} for h in answer["SpotPriceHistory"]]
        return shared.parse_spot_price({"SpotPriceHistory": history}) or 0.0


class CliStore(Store):
    """The same through the AWS CLI, for images without boto3 (the agent's Cloud does the calls)."""

    def __init__(self, bucket: str, prefix: str, region: str) -> None:  # noqa: D107 - no boto3 here
        self.bucket, self.prefix, self.region = bucket, prefix.strip("/"), region
        self.cloud = shared.Cloud(region, bucket, prefix)

    def get_bytes(self, rel: str) -> bytes | None:
        result = self.cloud.aws("s3", "cp", "--only-show-errors", self.cloud.uri(rel), "-", check=False)
        if result.code != 0:
            if shared.not_found(result):
                return None
            raise shared.CommandError(f"reading {self.cloud.uri(rel)}", result)
        return result.out.encode()

    def put_bytes(self, rel: str, data: bytes, content_type: str = "text/plain") -> None:
        self.cloud.put_bytes(data, rel, content_type=content_type)

    def exists(self, rel: str) -> bool:
        return self.cloud.exists(rel)

    def keys(self, rel: str) -> list[str]:
        answer = shared.parse_json(self.cloud.aws("s3api", "list-objects-v2", "--bucket", self.bucket,
                                                  "--prefix", self.key(rel)).out)
        return [str(item["Key"]) for item in answer.get("Contents") or []]

    def download(self, uri: str, dest: Path, kind: str) -> int:
        if kind == "file":
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.cloud.aws("s3", "cp", "--only-show-errors", uri, str(dest), timeout=None)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            self.cloud.aws("s3", "cp", "--recursive", "--only-show-errors", uri, str(dest), timeout=None)
        return sum(1 for p in dest.rglob("*") if p.is_file()) if dest.is_dir() else 1

    def upload_tree(self, local: Path, rel: str, seen: dict[str, tuple[int, int]]) -> int:
        if not local.is_dir():
            return 0
        self.cloud.aws("s3", "sync", "--only-show-errors", str(local), self.cloud.uri(rel), timeout=None)
        return -1  # sync says nothing about how many

    def secrets(self, names: list[str], ssm_prefix: str) -> dict[str, str]:
        prefix = "/" + ssm_prefix.strip("/") + "/"
        values: dict[str, str] = {}
        for start in range(0, len(names), 10):
            answer = shared.parse_json(self.cloud.aws("ssm", "get-parameters", "--with-decryption", "--names",
                                                      *[prefix + n for n in names[start:start + 10]]).out)
            values.update({str(p["Name"])[len(prefix):]: str(p["Value"]) for p in answer.get("Parameters") or []})
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"secret(s) {', '.join(missing)} not found in SSM under {prefix}")
        return values

    def spot_price(self, instance_type: str, zone: str) -> float:
        result = self.cloud.aws("ec2", "describe-spot-price-history", "--instance-types", instance_type,
                                "--availability-zone", zone, "--product-descriptions", "Linux/UNIX",
                                "--start-time", shared.iso(), "--max-items", "1", check=False, timeout=60)
        return (shared.parse_spot_price(shared.parse_json(result.out)) if result.code == 0 else None) or 0.0


def connect(environ: Mapping[str, str]) -> Store:
    bucket, prefix = environ["SUBMITTER_BUCKET"], environ.get("SUBMITTER_PREFIX", "submitter")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    try:
        import boto3  # noqa: F401
    except ImportError:
        return CliStore(bucket, prefix, region)
    return Store(bucket, prefix, region)


# ----------------------------------------------------------------------------------------- one attempt


class Wrapper:
    def __init__(self, store: Store, environ: Mapping[str, str], work: Path = WORK,
                 imds: Any | None = None) -> None:
        self.store = store
        self.environ = dict(environ)
        self.submission = environ["SUBMITTER_SUBMISSION_ID"]
        self.work = work
        self.imds = imds
        self.sub: dict[str, Any] = {}
        self.run: dict[str, Any] = {}
        self.run_id = ""
        self.status: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.base_cost = 0.0
        self.price = 0.0
        self.sigterm = False
        self.chunk = 0
        self.offset = 0
        self.synced: dict[str, tuple[int, int]] = {}
        self.sync_lock = threading.Lock()
        self.handler: logging.Handler | None = None

    # ------------------------------------------------------------------ top level

    def main(self) -> int:
        try:
            return self.attempt()
        except Exception as exc:  # never end silently: status.json says why
            log.exception("wrapper error")
            if not self.run_id:
                return 1
            self.stop_child()
            return self.conclude(shared.Ending("error", reason=f"wrapper error: {type(exc).__name__}: {exc}"))

    def attempt(self) -> int:
        base = f"submissions/{self.submission}"
        self.sub = json.loads(self.store.get_bytes(f"{base}/submission.json") or b"{}")
        runs = json.loads(self.store.get_bytes(f"{base}/runs.json") or b"[]")
        if not self.sub or not runs:
            raise RuntimeError(f"no submission.json or runs.json under {self.store.key(base)}")
        self.run = pick_run(runs, self.environ)
        self.run_id = str(self.run["run_id"])
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        self.attach_log()
        prev = self.read_status()
        if prev.get("state") in shared.TERMINAL:
            log.info("run %s is already %s: nothing to do", self.run_id, prev["state"])
            self.status = prev
            self.close_log()
            return 0 if prev["state"] == "succeeded" else 1
        identity = self.identity()
        self.status, lost = shared.begin_attempt(prev, identity, shared.iso())
        self.base_cost = float(self.status.get("cost") or 0.0)
        if lost:
            given_up = shared.interruption_reason(int(self.status["interruptions"]), self.retries("on_interruption"))
            if given_up:
                return self.conclude(shared.Ending("setup", reason=given_up))
        if self.cancelled():
            return self.conclude(shared.Ending("cancel", reason="cancelled before it started"))
        self.write_status()
        log.info("run %s: attempt %s (Batch job %s, attempt %s)", self.run_id, self.status["attempt"],
                 self.environ.get("AWS_BATCH_JOB_ID", "?"), self.environ.get("AWS_BATCH_JOB_ATTEMPT", "?"))
        try:
            self.restore()
            self.start()
        except (shared.CommandError, ValueError, OSError) as exc:
            log.error("run %s could not start: %s", self.run_id, exc)
            return self.conclude(shared.Ending("setup", reason=str(exc)))
        return self.conclude(self.watch())

    def attach_log(self) -> None:
        """runs/RUN/logs/agent.log: earlier attempts' lines first, then this one's (uploaded at the end)."""
        path = self.work / "logs" / "agent.log"
        path.write_bytes(self.store.get_bytes(f"runs/{self.run_id}/logs/agent.log") or b"")
        log.setLevel(logging.INFO)  # the run's log has the INFO lines whatever the root logger says
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s wrapper %(levelname)s %(message)s"))
        logging.getLogger().addHandler(self.handler)

    def close_log(self) -> None:
        if self.handler is None:
            return
        self.handler.flush()
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        self.handler = None
        try:
            self.store.put_bytes(f"runs/{self.run_id}/logs/agent.log",
                                 (self.work / "logs" / "agent.log").read_bytes())
        except Exception as exc:
            log.error("could not upload the wrapper log: %s", exc)

    def retries(self, name: str) -> int:
        return int((self.sub.get("retries") or {}).get(name, 0))

    def read_status(self) -> dict[str, Any]:
        raw = self.store.get_bytes(f"runs/{self.run_id}/status.json")
        base = {"run_id": self.run_id, "submission_id": self.submission, "job": self.sub.get("job", "")}
        return {**base, **(json.loads(raw) if raw else {})}

    def write_status(self) -> None:
        self.store.put_bytes(f"runs/{self.run_id}/status.json", json.dumps(self.status, indent=2).encode() + b"\n",
                             "application/json")

    def identity(self) -> dict[str, Any]:
        """Where this attempt runs: the host from IMDS when the container can reach it, and the Batch job."""
        found: dict[str, Any] = {"batch_job_id": self.environ.get("AWS_BATCH_JOB_ID", "")}
        if self.imds is not None:
            for name, path in (("instance_id", "meta-data/instance-id"),
                               ("instance_type", "meta-data/instance-type"),
                               ("availability_zone", "meta-data/placement/availability-zone")):
                try:
                    found[name] = self.imds.get(path) or "unknown"
                except (OSError, urllib.error.URLError) as exc:
                    log.warning("IMDS %s: %s (is the hop limit 1?); cost is reported as 0", path, exc)
                    self.imds = None
                    break
        if found.get("instance_type") and found.get("availability_zone"):
            try:
                self.price = self.store.spot_price(found["instance_type"], found["availability_zone"])
            except Exception as exc:  # a missing permission must not stop the run
                log.warning("no spot price (%s): cost is reported as 0", exc)
        found["price"] = self.price
        return found

    def cancelled(self, which: int | None = None) -> bool:
        checks = [f"submissions/{self.submission}/cancel", f"runs/{self.run_id}/cancel"]
        if which is not None:
            checks = [checks[which % 2]]
        return any(self.store.exists(key) for key in checks)

    # ------------------------------------------------------------------ start

    def restore(self) -> None:
        mount = self.sub.get("volume_mount") or "/data"
        for item in self.sub.get("inputs") or []:
            dest = shared.data_path(str(item["target"]), mount, Path(mount))
            count = self.store.download(str(item["uri"]), dest, str(item.get("kind", "dir")))
            log.info("input %s restored to %s (%d file(s))", item["uri"], dest, count)
        for what in ("outputs", "checkpoints"):
            if self.sub.get(what):
                path = Path(self.sub[what])
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)  # the image's user need not be root
        if self.sub.get("checkpoints"):
            uri = f"s3://{self.store.bucket}/{self.store.key(f'runs/{self.run_id}/checkpoints/')}"
            count = self.store.download(uri, Path(self.sub["checkpoints"]), "dir")
            log.info("checkpoints restored: %d file(s)", count)
        earlier = self.store.get_bytes(f"runs/{self.run_id}/logs/container.log") or b""
        (self.work / "logs" / "container.log").write_bytes(earlier)
        self.offset = len(earlier)  # earlier attempts' log is shipped already
        self.chunk = shared.next_chunk_number(self.store.keys(f"runs/{self.run_id}/logs/chunks/"))

    def start(self) -> None:
        names = [str(n) for n in (self.sub.get("secrets") or {}).get("names") or []]
        secrets = self.store.secrets(names, str(self.sub["secrets"]["ssm_prefix"])) if names else {}
        env = child_env(self.environ, self.sub, self.run, int(self.status["attempt"]), secrets)
        command = shared.container_command(self.sub.get("command"))
        if not command:
            raise ValueError("the submission has no command (Batch runs the wrapper instead of the image's CMD)")
        with (self.work / "logs" / "container.log").open("ab") as sink:
            self.proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()
        self.status = shared.update_status(self.status, "running", started_at=shared.iso(),
                                           heartbeat_at=shared.iso())
        self.write_status()
        log.info("run %s: command started (env %s)", self.run_id, ", ".join(sorted(shared.container_env(
            self.sub, self.run, int(self.status["attempt"])))))

    # ------------------------------------------------------------------ while it runs

    def cost(self) -> float:
        elapsed = time.monotonic() - self.started if self.started else 0.0
        return round(self.base_cost + shared.cost_of(self.price, elapsed), 6)

    def watch(self, tick: float = TICK) -> shared.Ending:
        assert self.proc is not None
        sync: threading.Thread | None = None
        count = 0
        last_heartbeat = last_sync = time.monotonic()
        while True:
            try:
                code = self.proc.wait(timeout=tick)
                log.info("run %s: command exited with %d", self.run_id, code)
                return shared.Ending("exited", code)
            except subprocess.TimeoutExpired:
                pass
            count += 1
            ending = self.check(count)
            if ending is not None:
                log.warning("run %s: stopping (%s)", self.run_id, ending.reason)
                return shared.Ending(ending.kind, self.stop_child(), ending.reason)
            now = time.monotonic()
            try:
                self.ship()
                if now - last_heartbeat >= HEARTBEAT_EVERY:
                    last_heartbeat = now
                    self.status = shared.update_status(self.status, "running", heartbeat_at=shared.iso(),
                                                       cost=self.cost())
                    self.write_status()
            except Exception as exc:  # an S3 hiccup: the next tick tries again
                log.warning("run %s: %s", self.run_id, exc)
            if self.sub.get("checkpoints") and now - last_sync >= CHECKPOINT_EVERY and not (
                    sync and sync.is_alive()):
                last_sync = now
                sync = threading.Thread(target=self.sync_checkpoints, daemon=True)
                sync.start()

    def check(self, count: int) -> shared.Ending | None:
        """Why to stop now (SIGTERM, a spot notice, cancel, a limit), or None."""
        if self.sigterm:
            if self.cancelled():
                return shared.Ending("cancel", reason="cancelled")
            return shared.Ending("host", reason="AWS Batch stopped the container (SIGTERM): a spot reclaim, "
                                                "the host leaving, or a terminate without `submitter cancel`")
        if self.imds is not None:
            try:
                action = self.imds.spot_action()
                if action:
                    return shared.Ending("spot", reason=f"spot interruption notice ({action.get('action')} at "
                                                        f"{action.get('time')})")
            except (OSError, urllib.error.URLError):
                self.imds = None
        if self.cancelled(which=count):
            return shared.Ending("cancel", reason="cancelled")
        reason = shared.limit_reason(time.monotonic() - self.started, self.cost(), self.sub.get("max_runtime"),
                                     self.sub.get("max_cost"))
        return shared.Ending("limit", reason=reason) if reason else None

    def ship(self, final: bool = False) -> None:
        """The log's new whole lines as the next numbered chunk; echoed to stdout for CloudWatch too."""
        with (self.work / "logs" / "container.log").open("rb") as source:
            source.seek(self.offset)
            piece, _ = shared.split_chunk(source.read(), final)
        if not piece:
            return
        self.store.put_bytes(f"runs/{self.run_id}/logs/chunks/{shared.chunk_name(self.chunk)}", piece)
        sys.stdout.write(piece.decode(errors="replace"))
        sys.stdout.flush()
        self.chunk += 1
        self.offset += len(piece)

    def sync_checkpoints(self) -> None:
        with self.sync_lock:
            try:
                self.store.upload_tree(Path(self.sub["checkpoints"]), f"runs/{self.run_id}/checkpoints",
                                       self.synced)
            except Exception as exc:
                log.warning("checkpoint sync: %s", exc)

    def stop_child(self) -> int | None:
        """SIGTERM to the command's process group, SIGKILL after the grace (Batch kills us 30 s after its own)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        grace = min(STOP_GRACE, int(self.sub.get("grace_seconds") or STOP_GRACE))
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout=30)
        except ProcessLookupError:
            return proc.wait(timeout=30)

    # ------------------------------------------------------------------ the end

    def conclude(self, ending: shared.Ending) -> int:
        """Everything an attempt leaves whatever happened: log, outputs, checkpoints, status; the exit code."""
        if self.started:
            for what, step in (("container log", self.finish_log), ("outputs", self.upload_outputs),
                               ("checkpoints", self.sync_checkpoints)):
                try:
                    step()
                except Exception as exc:  # one failed upload must not cost the others
                    log.error("run %s: uploading the %s failed: %s", self.run_id, what, exc)
        state, fields, action = shared.decide_end(ending, self.status, {
            "on_interruption": self.retries("on_interruption"), "on_failure": self.retries("on_failure")})
        state, fields, code = settle(state, fields, action, final_attempt(self.environ))
        self.status = shared.update_status(self.status, state, ended_at=shared.iso(), heartbeat_at=shared.iso(),
                                           cost=self.cost(), **fields)
        if ending.exit_code is not None:
            self.status["exit_code"] = ending.exit_code
        self.write_status()
        log.info("run %s: %s%s; wrapper exits %d", self.run_id, state,
                 f" ({fields['reason']})" if fields.get("reason") else "", code)
        self.close_log()
        return code

    def finish_log(self) -> None:
        self.ship(final=True)
        self.store.put_bytes(f"runs/{self.run_id}/logs/container.log",
                             (self.work / "logs" / "container.log").read_bytes())

    def upload_outputs(self) -> None:
        if self.sub.get("outputs"):
            self.store.upload_tree(Path(self.sub["outputs"]), f"runs/{self.run_id}/outputs", {})


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s wrapper %(levelname)s %(message)s")
    environ = dict(os.environ)
    imds = shared.Imds(timeout=1.0)
    wrapper = Wrapper(connect(environ), environ, imds=imds)

    def on_term(signum: int, frame: Any) -> None:
        log.warning("signal %d: AWS Batch is stopping this container", signum)
        wrapper.sigterm = True

    signal.signal(signal.SIGTERM, on_term)
    return wrapper.main()


if __name__ == "__main__":
    sys.exit(main())
