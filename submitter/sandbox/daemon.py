"""The sandbox daemon: moto (the AWS API) with the price table, a control endpoint, and the instance runner.

Started detached by `submitter sandbox up` as `python -m submitter.sandbox.daemon ...`; its output goes to
$SUBMITTER_HOME/sandbox/daemon.log. SIGTERM tears every instance down, then exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from submitter.runtime.credentials import answer_json
from submitter.sandbox import batch, fidelity, iam, limits, placement, prices, snapshots, speed
from submitter.sandbox import state as st

log = logging.getLogger("submitter.sandbox.daemon")
MARKER = "submitter.sandbox.daemon"  # in the daemon's command line: how `down` recognises its pid


def install_price_table() -> None:
    """Make moto's DescribeSpotPriceHistory answer from prices.py (moto's own answer is a constant)."""
    from moto.core.responses import ActionResult
    from moto.ec2.responses.spot_instances import SpotInstances

    def describe_spot_price_history(self: Any) -> ActionResult:
        zones = [z.name for z in self.ec2_backend.describe_availability_zones()]
        rows = prices.history(
            zones,
            datetime.now(timezone.utc),
            instance_types=self._get_param("InstanceTypes", []) or [],
            availability_zone=self._get_param("AvailabilityZone"),
            product_descriptions=self._get_param("ProductDescriptions", []) or [],
            start_time=_time(self._get_param("StartTime")),
            end_time=_time(self._get_param("EndTime")),
        )
        filters = {k: list(v) for k, v in self._filters_from_querystring().items()}
        return ActionResult({"SpotPriceHistory": prices.apply_filters(rows, filters)})

    SpotInstances.describe_spot_price_history = describe_spot_price_history  # type: ignore[method-assign]


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = datetime.fromtimestamp(float(text), timezone.utc)
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _write_private(path: Path, value: dict[str, Any]) -> None:
    """A file only its owner reads, from its creation on (it holds administrator keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        json.dump(value, out)


def control_server(port: int, runner: Any, ready: threading.Event) -> ThreadingHTTPServer:
    """A tiny JSON endpoint on loopback: health, scheduling spot interruptions (one instance now, or a pool at a
    rate), and the sandbox's Spot Instance Advisor document (placement.py)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            pass

        def _reply(self, status: int, value: dict[str, Any]) -> None:
            answer_json(self, status, value)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200 if ready.is_set() else 503, {"ready": ready.is_set()})
            elif self.path == "/spot-advisor-data.json":
                self._reply(200, placement.advisor_document(runner.region))
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path == "/interrupt-rate":
                self._rate()
                return
            if self.path != "/interrupt":
                self._reply(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                iid, notice = str(body["instance_id"]), float(body["notice_seconds"])
            except (ValueError, KeyError, TypeError):
                self._reply(400, {"error": "expected JSON {instance_id, notice_seconds}"})
                return
            at = runner.interrupt(iid, notice)
            if at is None:
                self._reply(404, {"error": f"{iid} has no running host in the sandbox"})
            else:
                self._reply(200, {"instance_id": iid, "terminate_at": at.isoformat()})

        def _rate(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                pool = (str(body["instance_type"]), str(body["availability_zone"]))
                per_hour, notice = float(body["per_hour"]), float(body["notice_seconds"])
                if not (per_hour >= 0 and notice >= 0):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                self._reply(400, {"error": "expected JSON {instance_type, availability_zone, per_hour >= 0, "
                                           "notice_seconds >= 0}"})
                return
            self._reply(200, {"pools": runner.set_rate(pool, per_hour, notice)})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    return server


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=MARKER)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--region", required=True)
    parser.add_argument("--port-base", required=True, type=int)
    parser.add_argument("--image", required=True)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request otherwise
    import boto3
    import docker
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.server import ThreadedMotoServer

    from submitter.sandbox.runner import Runner

    ports = st.ports(args.port_base)
    paths = st.Paths(args.home / "sandbox")
    endpoint = f"http://127.0.0.1:{ports['moto']}"
    speed.install()  # two costs of moto's own that AWS does not have
    install_price_table()
    placement.install()  # GetSpotPlacementScores, which moto lacks, from the same table
    fidelity.install()  # spot groups launch the way EC2 does (type, AZ, IMDS options, AMI)
    limits.install()  # AWS's server-side limits (sizes, names, tags) refused as AWS refuses them
    from submitter.sandbox import sshd

    sshd.install_console_output()  # instances launched with a key pair show their SSH host keys there
    iam.install()
    snapshots.install(paths)  # CreateSnapshot copies the volume's loop-device file; a volume from one starts as it
    # Batch jobs run on the engine as on ECS-EC2 (host network, job role endpoint); before any IAM backend exists,
    # so AWS's managed policies load with it (init --batch attaches one).
    batch.install(endpoint, args.region, st.home_hash(args.home))
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=ports["moto"], verbose=False)
    moto.start()
    # IAM is enforced from the first request on: the CLI side signs as an administrator user, each instance as
    # its own role (iam.py). The keys reach `sandbox up` through a file only root can read.
    access_key, secret_key = iam.create_admin(DEFAULT_ACCOUNT_ID)
    iam.enforce()
    _write_private(paths.admin_keys, {"access_key_id": access_key, "secret_access_key": secret_key})
    session = boto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                            region_name=args.region)
    cache: dict[str, Any] = {}
    lock = threading.Lock()

    def clients(service: str) -> Any:
        with lock:  # boto3 client creation is not thread-safe
            if service not in cache:
                cache[service] = session.client(service, endpoint_url=endpoint)
            return cache[service]

    account = clients("sts").get_caller_identity()["Account"]
    runner = Runner(clients, docker.from_env(), paths, st.home_hash(args.home), args.region, account, endpoint,
                    args.image)
    ready = threading.Event()
    stop = threading.Event()
    control = control_server(ports["control"], runner, ready)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ready.set()
    log.info("ready: moto %s, control 127.0.0.1:%s, host image %s", endpoint, ports["control"], args.image)
    try:
        while not stop.is_set():
            try:
                runner.tick()
            except Exception:  # keep serving: one bad tick (e.g. engine hiccup) must not end the sandbox
                log.exception("runner tick failed")
            stop.wait(1.0)
    finally:
        log.info("stopping: tearing down %d instance(s)", len(runner.hosts))
        runner.shutdown_all()
        batch.shutdown()
        control.shutdown()
        moto.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
