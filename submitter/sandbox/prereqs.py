"""What `sandbox up` needs from this machine, checked first, each failure with the command that fixes it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import Any

from submitter.errors import SandboxError

WHERE = "sandbox up"


def check_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            WHERE, "the sandbox needs root (loop devices, mounts, privileged host containers)",
            "run it as root, e.g. `sudo -E submitter sandbox up`",
        )


def check_tools(need_debootstrap: bool) -> None:
    tools = {
        "docker": "apt-get install -y docker.io",
        "docker-registry": "apt-get install -y docker-registry",
        "htpasswd": "apt-get install -y apache2-utils",
        "losetup": "apt-get install -y util-linux",
        "mount": "apt-get install -y mount",
    }
    if need_debootstrap:
        tools["debootstrap"] = "apt-get install -y debootstrap"
    for tool, fix in tools.items():
        if shutil.which(tool) is None:
            raise SandboxError(WHERE, f"{tool} is not installed", f"{fix}, then run `submitter sandbox up` again")


def engine() -> Any:
    """A docker SDK client on a reachable engine."""
    try:
        import docker
    except ImportError as exc:
        raise SandboxError(WHERE, "the docker Python SDK is missing", "pip install -e '.[sandbox]'") from exc
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, a missing socket...
        raise SandboxError(
            WHERE, f"the docker engine is not reachable ({exc.__class__.__name__}: {exc})",
            "start dockerd: `setsid dockerd >/var/log/dockerd.log 2>&1 &` (or `systemctl start docker`), "
            "wait for `docker info` to answer, then run `submitter sandbox up` again",
        ) from exc
    return client


def check_loop_devices() -> None:
    try:
        out = subprocess.run(["losetup", "-f"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(WHERE, f"losetup failed: {exc}", "apt-get install -y util-linux") from exc
    if out.returncode != 0 or not out.stdout.strip():
        raise SandboxError(
            WHERE, f"no free loop device ({out.stderr.strip() or 'losetup -f found none'})",
            "load the loop module (`modprobe loop`) or free loop devices (`losetup -D` detaches unused ones); "
            "in a container, run it privileged",
        )


def check_ports(ports: dict[str, int]) -> None:
    for name, port in ports.items():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            base = min(ports.values())
            raise SandboxError(
                WHERE, f"port {port} on 127.0.0.1 (the sandbox's {name} port) is taken: {exc.strerror}",
                f"stop what listens there (`ss -ltnp 'sport = :{port}'`) or use other ports: "
                f"SUBMITTER_SANDBOX_PORT={base + 100} (the sandbox uses it and the next two)",
            ) from exc
        finally:
            sock.close()
