"""Where the sandbox keeps its state on disk, and the host-level pieces (mounts, loop devices, processes)
that both the daemon and `down` need, so `down` can clean up even after the daemon has died.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORK_ROOT = Path("/mnt/submitter")  # the instances' work roots (docs/decisions.md); same path on the host
LABEL = "submitter.sandbox"  # docker label on every sandbox container; value: the sandbox's home hash
CONTAINER_PREFIX = "submitter-sbx-"


@dataclass(frozen=True)
class Paths:
    """The files of one sandbox, all under $SUBMITTER_HOME/sandbox."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def admin_keys(self) -> Path:
        """The administrator's access keys (mode 0600), written by the daemon once moto enforces IAM."""
        return self.root / "admin-keys.json"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def registry_log(self) -> Path:
        return self.root / "registry.log"

    @property
    def instances(self) -> Path:
        return self.root / "instances"

    def instance(self, instance_id: str) -> Path:
        return self.instances / instance_id


def home_hash(home: Path) -> str:
    """A short id for the sandbox of this SUBMITTER_HOME: its containers carry it as a label."""
    return hashlib.sha256(str(home.expanduser().resolve()).encode()).hexdigest()[:12]


def ports(base: int) -> dict[str, int]:
    return {"moto": base, "registry": base + 1, "control": base + 2}


def port_free(port: int) -> bool:
    """Whether `port` on loopback can be bound now."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base(first: int, last: int = 64000) -> int:
    """A base whose sandbox ports are all free, searched from `first` plus a pid-spread offset, so that
    concurrent sessions (test runs, benchmarks) start apart."""
    width = len(ports(0))
    start = first + (os.getpid() % 400) * 10
    for base in range(start, last, 10):
        if all(port_free(base + i) for i in range(width)):
            return base
    raise RuntimeError(f"no free range of {width} loopback ports between {first} and {last}")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ processes


def process_alive(pid: int | None, marker: str) -> bool:
    """True when `pid` runs and its command line contains `marker` (a reused pid is not ours)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False  # a zombie has exited; its parent just has not reaped it
    return marker in cmdline


def stop_process(pid: int | None, marker: str, grace: float = 30.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; only if the pid is still ours."""
    if not process_alive(pid, marker):
        return
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not process_alive(pid, marker):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        if not process_alive(pid, marker):
            return
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------ mounts


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first (the order to unmount them)."""
    prefix = str(path).rstrip("/")
    found: list[str] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if (point == prefix or point.startswith(prefix + "/")) and point not in found:
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_all(path: Path) -> list[str]:
    """Unmount everything at or below `path`; returns what would not unmount (lazily detached then)."""
    stuck: list[str] = []
    for _ in range(5):  # a path can be mounted several times over (propagation); repeat until clean
        points = mounts_under(path)
        if not points:
            break
        for point in points:
            if (subprocess.run(["umount", point], capture_output=True).returncode != 0
                    and subprocess.run(["umount", "-l", point], capture_output=True).returncode != 0):
                stuck.append(point)
    return stuck


def ensure_shared_work_root() -> None:
    """Make /mnt/submitter a shared mount, so mounts made inside a simulated host reach the engine."""
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    if str(WORK_ROOT) not in mounts_under(WORK_ROOT):
        subprocess.run(["mount", "--bind", str(WORK_ROOT), str(WORK_ROOT)], check=True, capture_output=True)
    subprocess.run(["mount", "--make-rshared", str(WORK_ROOT)], check=True, capture_output=True)



def ensure_credentials_address() -> None:
    """ECS's link-local address on the engine's bridge, where a host's agent serves a job role to its container
    (runtime/credentials.py). The hosts share this machine's network but carry no `ip`: the runner adds it."""
    from submitter.runtime.credentials import ADDRESS, bridge_name

    subprocess.run(["ip", "address", "replace", f"{ADDRESS}/32", "dev", bridge_name()], capture_output=True)


# ------------------------------------------------------------------------------------------ loop devices


def loop_attach(image: Path) -> str:
    out = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def loop_backing(device: str) -> str | None:
    """The file a loop device is attached to, or None when it is free."""
    name = os.path.basename(device)
    try:
        return Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


def loop_detach(device: str, image: Path | None = None) -> None:
    """Detach `device`, but only while it still backs `image` (the number may have been reused)."""
    backing = loop_backing(device)
    if backing is None:
        return
    if image is not None and backing.removesuffix(" (deleted)") != str(image):
        return
    subprocess.run(["losetup", "-d", device], capture_output=True)


def loops_backed_by(directory: Path) -> list[str]:
    """Every loop device whose backing file lies under `directory` (what a crashed sandbox left)."""
    found: list[str] = []
    prefix = str(directory).rstrip("/") + "/"
    for entry in Path("/sys/block").glob("loop*"):
        backing = loop_backing(entry.name)
        if backing and backing.startswith(prefix):
            found.append(f"/dev/{entry.name}")
    return found
