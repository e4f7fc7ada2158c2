"""Benchmark of the image stage: `ensure_image` against `docker build` + `docker push` doing the same work.

Scenarios (each repetition starts from a fresh, empty registry per tool, so nothing is mounted across):
  cold       new 100 MB random layer (a new NONCE build arg) and new code: build everything, push everything
  unchanged  the same inputs again
  one-line   one line of train.py changed

Setup, chosen to be self-contained and not to depend on a running sandbox: this script starts its own
moto server (the ECR API) and, per tool and repetition, its own `docker-registry` with htpasswd user AWS
and the password moto's GetAuthorizationToken decodes to. Every registry sits behind a small TCP proxy that
counts the bytes clients send to it: "bytes up" is measured on the wire, the same way for both tools,
independently of submitter's own accounting (shown beside it as "reported").
The CLI uses the classic builder (DOCKER_BUILDKIT=0), the one the docker SDK's build API uses, and logs in
once before its timings (not counted); submitter's timings include its ECR calls.

Needs: a running docker engine, `docker-registry`, `htpasswd`, and a local base image `python:3.11-slim`
(`python -m submitter.sandbox.images` makes one) or `submitter-test/base:bookworm`.
Run: `python -m bench image [--smoke]` (figures for bench/RESULTS.md), or `python bench/image.py [--reps 3]
[--smoke]` for the table. Target (issue 9): a one-line change pushes at most 1% of the image's bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PASSWORD = "123456789012-auth-token"
BLOB_MB = 100
SMOKE_BLOB_MB = 10
TARGET_SHARE = 0.01
SCENARIOS = ("cold", "unchanged", "one-line")


class CountingProxy:
    """TCP forwarder on loopback that counts the bytes clients send upstream."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sent = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, count: bool) -> None:
        try:
            while chunk := source.recv(1 << 16):
                target.sendall(chunk)
                if count:
                    with self._lock:
                        self.sent += len(chunk)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()


class Registry:
    """A fresh `docker-registry` (htpasswd user AWS) behind a CountingProxy."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="bench-registry-")
        port = _free_port()
        htpasswd = subprocess.run(["htpasswd", "-Bbn", "AWS", PASSWORD], check=True, capture_output=True, text=True)
        Path(self.root, "htpasswd").write_text(htpasswd.stdout)
        Path(self.root, "config.yml").write_text(
            f"version: 0.1\nlog: {{level: warn}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root}/data}}}}\n"
            f"http: {{addr: '127.0.0.1:{port}'}}\n"
            f"auth: {{htpasswd: {{realm: bench, path: {self.root}/htpasswd}}}}\n"
        )
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", f"{self.root}/config.yml"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(f"http://127.0.0.1:{port}/v2/")
        self.proxy = CountingProxy(port)
        self.host = f"127.0.0.1:{self.proxy.port}"

    def close(self) -> None:
        listed = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}} {{.ID}}"], capture_output=True, text=True
        ).stdout.splitlines()
        mine = sorted({line.split()[1] for line in listed if line.startswith(f"{self.host}/")})
        if mine:  # the bench's images would otherwise pile up, 280 MB a repetition
            subprocess.run(["docker", "rmi", "-f", *mine], capture_output=True)
        self.proxy.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def _base(api: Any) -> str:
    from docker.errors import ImageNotFound

    for candidate in ("python:3.11-slim", "submitter-test/base:bookworm"):
        try:
            api.inspect_image(candidate)
            return candidate
        except ImageNotFound:
            continue
    sys.exit("no base image: run `python -m submitter.sandbox.images` first")


def _project(root: Path, base: str, blob_mb: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile.train").write_text(
        f"FROM {base}\nARG NONCE\n"
        f'RUN echo "$NONCE" > /opt/nonce && head -c {blob_mb * 1024 * 1024} /dev/urandom > /opt/blob\n'
        'WORKDIR /app\nCOPY train.py /app/train.py\nCMD ["python3", "/app/train.py"]\n'
    )
    (root / "train.py").write_text("print('epoch 1')\n")


def _one_line_change(root: Path) -> None:
    (root / "train.py").write_text("print('epoch 2')\n")


def run_ours(api: Any, moto: str, base: str, work: Path, blob_mb: int) -> dict[str, tuple[float, int, int, int]]:
    import boto3

    from submitter.aws.ecr import TokenCache
    from submitter.aws.session import Aws
    from submitter.image import BuildRequest, ensure_image
    from submitter.progress import NullProgress

    registry = Registry()
    try:
        session = boto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")
        aws = Aws(session, "us-east-1", moto, registry.host)
        project = work / "ours"
        _project(project, base, blob_mb)
        build = BuildRequest(
            job="bench",
            dockerfile=project / "Dockerfile.train",
            context=project,
            build_args={"NONCE": uuid.uuid4().hex},
            repository=f"bench/{uuid.uuid4().hex[:8]}",
        )
        cache = TokenCache()
        results = {}
        for scenario in SCENARIOS:
            if scenario == "one-line":
                _one_line_change(project)
            before = registry.proxy.sent
            start = time.perf_counter()
            result = ensure_image(aws, api, build, NullProgress(), cache=cache)
            seconds = time.perf_counter() - start
            results[scenario] = (
                seconds,
                registry.proxy.sent - before,
                result.bytes_pushed,
                result.image_bytes,
            )
        return results
    finally:
        registry.close()


def run_cli(base: str, work: Path, blob_mb: int) -> dict[str, tuple[float, int, int, int]]:
    registry = Registry()
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    try:
        subprocess.run(
            ["docker", "login", "-u", "AWS", "--password-stdin", registry.host],
            input=PASSWORD,
            text=True,
            check=True,
            capture_output=True,
        )
        project = work / "cli"
        _project(project, base, blob_mb)
        name = f"{registry.host}/bench/{uuid.uuid4().hex[:8]}:latest"
        nonce = uuid.uuid4().hex
        results = {}
        for scenario in SCENARIOS:
            if scenario == "one-line":
                _one_line_change(project)
            before = registry.proxy.sent
            start = time.perf_counter()
            subprocess.run(
                [
                    "docker",
                    "build",
                    "--platform",
                    "linux/amd64",
                    "--build-arg",
                    f"NONCE={nonce}",
                    "-f",
                    str(project / "Dockerfile.train"),
                    "-t",
                    name,
                    str(project),
                ],
                check=True,
                capture_output=True,
                env=env,
            )
            subprocess.run(["docker", "push", name], check=True, capture_output=True, env=env)
            seconds = time.perf_counter() - start
            results[scenario] = (seconds, registry.proxy.sent - before, 0, 0)
        return results
    finally:
        subprocess.run(["docker", "logout", registry.host], capture_output=True)
        registry.close()


def _median(rows: list[dict[str, tuple[float, int, int, int]]], scenario: str, index: int) -> float:
    return statistics.median(row[scenario][index] for row in rows)


Rows = list[dict[str, tuple[float, int, int, int]]]


def measure(reps: int, blob_mb: int) -> tuple[Rows, Rows, str]:
    """Both tools, `reps` times each, alternating which goes first; returns (ours, cli, base image)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log

    from submitter.image import engine

    api = engine()
    base = _base(api)
    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    work = Path(tempfile.mkdtemp(prefix="bench-image-"))
    ours: Rows = []
    cli: Rows = []
    try:
        for rep in range(reps):
            # alternate the order so neither tool always runs on a warmer page cache
            here = work / str(rep)
            runs: list[Callable[[], None]] = [
                lambda: ours.append(run_ours(api, f"http://127.0.0.1:{port}", base, here, blob_mb)),  # noqa: B023
                lambda: cli.append(run_cli(base, here, blob_mb)),  # noqa: B023
            ]
            for one in runs if rep % 2 == 0 else reversed(runs):
                one()
            print(f"image: repetition {rep + 1}/{reps} done", file=sys.stderr, flush=True)
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    return ours, cli, base


def run(smoke: bool = False) -> dict[str, object]:
    """Figures for bench/RESULTS.md: the one-line change's bytes up / image bytes, and seconds vs the docker CLI."""
    reps, blob_mb = (1, SMOKE_BLOB_MB) if smoke else (3, BLOB_MB)
    ours, cli, base = measure(reps, blob_mb)
    image = _median(ours, "cold", 3)
    share = _median(ours, "one-line", 1) / image
    figures: dict[str, object] = {
        "image (compressed, MB)": round(image / 1e6, 1),
        "one-line change: bytes up, submitter (wire)": int(_median(ours, "one-line", 1)),
        "one-line change: bytes up, docker CLI (wire)": int(_median(cli, "one-line", 1)),
        "one-line change: bytes up / image bytes": f"{share:.4%}",
        "bytes target": f"<= {TARGET_SHARE:.0%}",
        "bytes met": share <= TARGET_SHARE,
    }
    for scenario in SCENARIOS:
        mine, theirs = _median(ours, scenario, 0), _median(cli, scenario, 0)
        figures[f"{scenario}: submitter (s)"] = round(mine, 2)
        figures[f"{scenario}: docker build + push (s)"] = round(theirs, 2)
        figures[f"{scenario}: ratio"] = round(mine / theirs, 2)
    figures["setup"] = f"base {base} + {blob_mb} MiB random layer; fresh registry per tool and repetition"
    seconds = _median(ours, "one-line", 0) / _median(cli, "one-line", 0)
    summary = [
        {"figure": "One-line change: bytes pushed / image bytes", "value": f"{share:.3%}",
         "target": f"<= {TARGET_SHARE:.0%}", "met": share <= TARGET_SHARE},
        {"figure": "One-line change: seconds, submitter / docker build + push", "value": f"{seconds:.2f}x",
         "target": "vs docker CLI (none set)", "met": None},
    ]
    return {"name": "One-line code change: bytes pushed / image bytes, and seconds vs the docker CLI",
            "figures": figures, "repeat": reps, "summary": summary}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per tool (median reported)")
    parser.add_argument("--smoke", action="store_true", help="one quick repetition")
    args = parser.parse_args(argv)
    reps = 1 if args.smoke else args.reps
    ours, cli, base = measure(reps, SMOKE_BLOB_MB if args.smoke else BLOB_MB)
    image = _median(ours, "cold", 3)
    print(
        f"\nimage stage, median of {reps} (base {base} + random layer; "
        f"image {image / 1e6:.1f} MB compressed); bytes up = measured at the registry's door\n"
    )
    header = (
        f"{'scenario':<10} {'submitter s':>11} {'docker CLI s':>12} {'submitter bytes up':>19} "
        f"{'CLI bytes up':>13} {'reported':>11} {'up/image':>9}"
    )
    print(header)
    print("-" * len(header))
    for scenario in SCENARIOS:
        up = _median(ours, scenario, 1)
        print(
            f"{scenario:<10} {_median(ours, scenario, 0):>11.2f} {_median(cli, scenario, 0):>12.2f} "
            f"{up:>19,.0f} {_median(cli, scenario, 1):>13,.0f} {_median(ours, scenario, 2):>11,.0f} "
            f"{up / image:>9.4%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
