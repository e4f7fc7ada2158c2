"""The pool worker's host, set up once: the data volume, the registry login and image pull, the dead-man
switch."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from submitter import contract
from submitter.runtime.commands import Result, run
from submitter.runtime.store import Store

log = logging.getLogger("submitter.runtime")

WORK_BASE = Path(contract.WORK_BASE)
DEVICES = contract.DATA_DEVICES
DEVICE_WAIT = 60.0


class BootError(Exception):
    """The host cannot run anything (no data volume, registry refused): every run it receives fails."""


def prepare_volume(instance_id: str, work_base: Path = WORK_BASE, devices: tuple[str, ...] = DEVICES,
                   device_wait: float = DEVICE_WAIT) -> Path:
    """Format the data volume if it is blank and mount it at the work root; returns the work root."""
    work = work_base / instance_id
    deadline = time.monotonic() + device_wait
    device = None
    while device is None:
        device = next((d for d in devices if os.path.exists(d)), None)
        if device is None and time.monotonic() >= deadline:
            raise BootError(f"data volume {devices[0]} did not mount: no {' or '.join(devices)} "
                            f"after {int(device_wait)} s")
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


def pull_image(store: Store, registry: str | None, image: str) -> None:
    if registry:
        result = Result(1, "", "")
        for delay in (0, 5, 15):
            time.sleep(delay)
            password = store.registry_password()
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


def versions() -> dict[str, str]:
    """What a run on this host ran on besides the image, for its status document (`host`) and `diff`: the
    kernel, the docker engine, and the NVIDIA driver when there is one. Cheap reads; what fails is left out."""
    import platform

    found = {"kernel": platform.release()}
    docker = run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30)
    if docker.code == 0 and docker.out.strip():
        found["docker_version"] = docker.out.strip()
    driver = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], timeout=30)
    if driver.code == 0 and driver.out.strip():
        found["nvidia_driver"] = driver.out.strip().splitlines()[0]
    return found


def rearm_deadman(minutes: int) -> None:
    """Push the host's power-off back so a long queue is not cut short, while a hung agent still stops."""
    run(["shutdown", "-c"], timeout=30)
    result = run(["shutdown", "-h", f"+{minutes}", "submitter: dead-man switch"], timeout=30)
    log.info("dead-man switch re-armed: power off in %d min%s", minutes,
             "" if result.code == 0 else f" (failed: {result.last_line()})")
