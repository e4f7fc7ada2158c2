"""Parallel layer downloads: `docker pull` of a many-layer image with dockerd's default of 3 concurrent layer
downloads against the boot script's 10 (runtime/boot.sh PULL_STREAMS), in the same run.

The machine's own engine is shared (the sandbox's hosts use it, other work too), so its settings are not a
benchmark's to change: a private dockerd of this benchmark's own (its own data root, exec root, socket,
containerd and bridge interface; no iptables, no forwarding; it never runs a container) pulls from a fresh
local registry (bench/image.py's). The count is switched as the boot switches it: daemon.json rewritten, then SIGHUP (a
reload, as `systemctl reload docker` does). The image: the local base plus LAYERS incompressible layers, pushed
once by the machine's engine; each repetition removes it from the private engine and pulls it again, the order
of the two settings alternating. The registry is on loopback, so the transfer is not a network's: what is
measured is docker's pipeline (fetch, gunzip, extraction), not ECR's per-stream rate (bench/overhead.py argues
that part on paper). Run: `python -m bench layers [--smoke]`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import MEASURED  # noqa: E402
from bench.image import PASSWORD, Registry, _base  # noqa: E402

DEFAULT, OURS = 3, 10
LAYERS = 12
BRIDGE_ADDRESS = "10.213.77.1/24"  # the private engine's bridge (it runs no container; the address is unused)
TIMEOUT_S = 600


class Engine:
    """A private dockerd; nothing of it outlives `close`."""

    def __init__(self, streams: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bench-engine-", dir="/tmp"))  # a short socket path
        self.config = self.root / "daemon.json"
        self.log = self.root / "dockerd.log"
        self.host = f"unix://{self.root}/docker.sock"
        self.set_streams(streams, reload=False)
        # A bridge of its own: with `--bridge none` dockerd deletes the interface `docker0` (moby's
        # removeDefaultBridgeInterface), which is the machine's engine's; a named bridge it never touches.
        self.bridge = "bst" + uuid.uuid4().hex[:8]
        for argv in (["link", "add", "name", self.bridge, "type", "bridge"],
                     ["addr", "add", BRIDGE_ADDRESS, "dev", self.bridge], ["link", "set", self.bridge, "up"]):
            subprocess.run(["ip", *argv], check=True, capture_output=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["dockerd", "--config-file", str(self.config), "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid"),
                 "-H", self.host, "--bridge", self.bridge, "--iptables=false", "--ip-masq=false",
                 "--ip-forward=false"],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while self.docker("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace").splitlines()[-5:]
                self.close()
                raise RuntimeError(f"the private dockerd did not start: {tail}")
            time.sleep(0.5)

    def docker(self, *argv: str, check: bool = True, env: dict[str, str] | None = None,
               stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["docker", "-H", self.host, *argv], capture_output=True, text=True, input=stdin,
                             env=env, timeout=TIMEOUT_S)
        if check and out.returncode != 0:
            raise RuntimeError(f"docker {argv[0]} (private engine): {out.stderr[-1000:]}")
        return out

    def set_streams(self, streams: int, reload: bool = True) -> None:
        self.config.write_text(json.dumps({"max-concurrent-downloads": streams}))
        if reload:
            before = self.log.read_text(errors="replace").count("Reloaded configuration")
            os.kill(self.proc.pid, signal.SIGHUP)
            deadline = time.monotonic() + 30
            while self.log.read_text(errors="replace").count("Reloaded configuration") <= before:
                if time.monotonic() > deadline:
                    raise RuntimeError("the private dockerd did not reload its configuration")
                time.sleep(0.1)
            last = [x for x in self.log.read_text(errors="replace").splitlines() if "Reloaded configuration" in x]
            if not re.search(rf'"max-concurrent-downloads":{streams}[,}}]', last[-1].replace("\\", "")):
                raise RuntimeError(f"the reload did not apply max-concurrent-downloads {streams}: {last[-1][:300]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        subprocess.run(["umount", "-R", str(self.root / "data")], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _image(registry: Registry, work: Path, layer_mb: int) -> str:
    """Push the base plus LAYERS random layers with the machine's engine; its reference in the registry."""
    from submitter.image import engine

    env = {**os.environ, "DOCKER_CONFIG": str(work / "docker"), "DOCKER_BUILDKIT": "0"}
    name = f"{registry.host}/layers-{uuid.uuid4().hex[:8]}:latest"
    subprocess.run(["docker", "login", "-u", "AWS", "--password-stdin", registry.host], input=PASSWORD, text=True,
                   env=env, check=True, capture_output=True)
    steps = "".join(f"RUN head -c {layer_mb << 20} /dev/urandom > /blob{i}\n" for i in range(LAYERS))
    (work / "Dockerfile").write_text(f"FROM {_base(engine())}\nRUN echo {uuid.uuid4().hex} > /nonce\n{steps}")
    subprocess.run(["docker", "build", "-t", name, str(work)], env=env, check=True, capture_output=True)
    subprocess.run(["docker", "push", name], env=env, check=True, capture_output=True)
    subprocess.run(["docker", "rmi", name], env=env, check=True, capture_output=True)
    return name


def run(smoke: bool = False) -> dict[str, object]:
    repeat, layer_mb = (1, 4) if smoke else (4, 16)
    registry = Registry()
    work = Path(tempfile.mkdtemp(prefix="bench-layers-"))
    times: dict[int, list[float]] = {DEFAULT: [], OURS: []}
    private: Engine | None = None
    try:
        name = _image(registry, work, layer_mb)
        private = Engine(DEFAULT)
        env = {**os.environ, "DOCKER_CONFIG": str(work / "docker")}
        private.docker("login", "-u", "AWS", "--password-stdin", registry.host, env=env, stdin=PASSWORD)
        private.docker("pull", "--quiet", name, env=env)  # once, untimed: both settings then start equally cold
        for i in range(repeat):
            for streams in ((DEFAULT, OURS) if i % 2 == 0 else (OURS, DEFAULT)):
                private.docker("rmi", name)
                private.set_streams(streams)
                start = time.perf_counter()
                private.docker("pull", "--quiet", name, env=env)
                times[streams].append(time.perf_counter() - start)
        layers = len(json.loads(private.docker("image", "inspect", name).stdout)[0]["RootFS"]["Layers"])
    finally:
        if private is not None:
            private.close()
        registry.close()
        shutil.rmtree(work, ignore_errors=True)
    default, ours = statistics.median(times[DEFAULT]), statistics.median(times[OURS])
    ratio = ours / default
    MEASURED["pull_streams_ratio"] = ratio
    figures: dict[str, Any] = {
        "image layers (base + random)": layers,
        "random layers x MB": f"{LAYERS} x {layer_mb}",
        f"docker pull, {DEFAULT} concurrent downloads (docker's default) (s)": round(default, 2),
        f"docker pull, {OURS} concurrent downloads (the boot's setting) (s)": round(ours, 2),
        f"ratio {OURS} / {DEFAULT}": round(ratio, 2),
        "target": "none (loopback: the network part of the lever cannot show here)",
    }
    notes = [
        "a private dockerd (its own data root, exec root, socket, containerd and bridge; no iptables, no "
        "container run) so the machine's engine is never reconfigured; the setting is switched by rewriting its "
        "daemon.json and SIGHUP, the boot's own mechanism, and the reload is checked in its log.",
        "the registry is a local `docker-registry` on loopback behind bench/image.py's counting proxy: there is no "
        "per-stream network limit to lift, so this shows docker's pipeline (fetch, gunzip, extraction in order) "
        "with more streams, not ECR's; the network side is argued in bench/overhead.py.",
    ]
    return {"name": "Parallel layer downloads: docker pull with 3 vs 10 concurrent downloads", "figures": figures,
            "repeat": repeat, "notes": notes,
            "summary": [{"figure": f"docker pull of a {layers}-layer image, {OURS} / {DEFAULT} concurrent downloads "
                                   "(loopback)", "value": f"{ratio:.2f}x", "target": None, "met": None}]}


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv), indent=2))
