"""The warm image cache on the instance (docs/image.md, "Warm cache").

`runtime.pyz cache ...` (the boot script of the one instance `submitter cache` launches): mount the data volume,
put docker's storage on it, pull the job's image, copy the packages the boot's install step downloaded for it
(contract.CACHE_PACKAGES: the AWS CLI, which a worker's boot then installs from the volume), write the marker
(CACHE_MARKER: the image, the packages and when), unmount,
report `cache-ready`, and return; the boot script powers off, the instance stops (its shutdown behaviour is `stop`)
and the CLI snapshots the volume.

`warm(...)` (the pool worker's boot, runtime/pool.py): a data volume restored from such a snapshot carries the
marker; when it names this submission's image, docker's storage is pointed at the volume, so the pull that follows
finds every layer present and only checks the manifest.

Docker's storage moves only where systemd runs the engine (an EC2 host): a sandbox host shares the machine's engine,
which is not its to change (as with the boot script's max-concurrent-downloads). There the switch is skipped and
logged; the marker and the volume's restore are what the sandbox proves.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from submitter import contract
from submitter.contract import Layout
from submitter.runtime import host as host_mod
from submitter.runtime.commands import CommandError, run
from submitter.runtime.store import CliStore, Store

log = logging.getLogger("submitter.runtime")

DOCKER_DIR = "docker"  # docker's data-root on the volume
DOCKERD_CONFIG = Path(os.environ.get("DOCKERD_CONFIG", "/etc/docker/daemon.json"))  # a test points it elsewhere
EXIT_FAILED = 1


def read_marker(work: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((work / contract.CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_marker(work: Path, image: str, moment: str, packages: list[str] | None = None) -> dict[str, Any]:
    marker = {"image": image, "digest": image.rpartition("@")[2] if "@" in image else "", "time": moment,
              "packages": packages or []}
    path = work / contract.CACHE_MARKER
    path.with_suffix(".new").write_text(json.dumps(marker))
    path.with_suffix(".new").replace(path)
    return marker


def systemd_engine() -> bool:
    """Is the docker engine this host's own, run by systemd (an EC2 host; never a sandbox host)?"""
    return run(["systemctl", "is-active", "--quiet", "docker"], timeout=30).code == 0


def use_volume_storage(work: Path, config: Path = DOCKERD_CONFIG) -> str:
    """Point dockerd's data-root at WORK/docker and restart the engine; returns what was done, for the log."""
    if not systemd_engine():
        return "docker's storage stays where it is: no systemd-run docker engine here (a sandbox host shares " \
               "the machine's engine)"
    conf: dict[str, Any] = {}
    if config.exists():
        try:
            conf = dict(json.loads(config.read_text()))
        except ValueError:
            conf = {}
    conf["data-root"] = str(work / DOCKER_DIR)
    (work / DOCKER_DIR).mkdir(exist_ok=True)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.with_suffix(".new").write_text(json.dumps(conf, indent=2))
    config.with_suffix(".new").replace(config)
    # data-root is not reloadable (SIGHUP): the engine restarts; no container runs yet at this point of a boot.
    result = run(["systemctl", "restart", "docker"], timeout=300)
    if result.code != 0:
        raise host_mod.BootError(f"docker did not restart on the data volume's storage: {result.last_line()}")
    return f"docker's storage is {work / DOCKER_DIR}"


def warm(work: Path, image: str) -> str:
    """The pool worker's boot: use the volume's cached image storage when its marker names `image`; returns the
    log line (also when there is no cache)."""
    marker = read_marker(work)
    if marker is None:
        return "warm cache: none (a blank data volume): pulling the whole image"
    if marker.get("image") != image:
        return f"warm cache: the volume holds {marker.get('image')}, not this image: pulling the whole image"
    done = use_volume_storage(work)
    return f"warm cache: the volume holds {image} (cached {marker.get('time')}); {done}"


def keep_packages(work: Path, source: Path = Path(contract.CACHE_PACKAGES_HOST)) -> list[str]:
    """Copy the package files the boot downloaded and installed from (runtime/boot.sh, MODE=cache) onto the
    volume; returns their names."""
    files = sorted(source.glob("*.rpm")) if source.is_dir() else []
    if not files:
        return []
    target = work / contract.CACHE_PACKAGES
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for file in files:
        shutil.copyfile(file, target / file.name)
    return [file.name for file in files]


def build(store: Store, layout: Layout, submission: str, instance_id: str) -> int:
    """The cache builder's whole life on its instance; returns the boot script's exit code (0: ready)."""
    report: dict[str, Any] = {"instance_id": instance_id, "booted_at": contract.iso()}
    state, reason = contract.BOOT_FAILED, ""
    try:
        sub = store.read_json(layout.submission_doc(submission)) or {}
        if not sub.get("image"):
            raise host_mod.BootError(f"no image in {store.uri(layout.submission_doc(submission))}")
        work = host_mod.prepare_volume(instance_id)
        log.info("cache: %s", use_volume_storage(work))
        host_mod.pull_image(store, sub.get("registry"), str(sub["image"]))
        packages = keep_packages(work)
        log.info("cache: %s", f"the boot's packages kept on the volume: {', '.join(packages)}" if packages
                 else "no packages kept: the boot installed nothing from a repository, or could not keep them")
        report["marker"] = write_marker(work, str(sub["image"]), contract.iso(), packages)
        if systemd_engine():  # the engine's files on the volume must be whole before the snapshot
            run(["systemctl", "stop", "docker"], timeout=300)
        run(["sync"], timeout=300)
        result = run(["umount", str(work)], timeout=120)
        if result.code != 0:
            raise host_mod.BootError(f"the data volume did not unmount: {result.last_line()}")
        state, reason = contract.CACHE_READY, f"the volume holds {sub['image']}"
    except (host_mod.BootError, CommandError, OSError) as exc:
        reason = str(exc)
        log.error("cache: %s", reason)
    log.info("cache: %s: %s", state, reason)
    try:
        store.put_json(layout.instance_report(submission, instance_id),
                       {**report, "state": state, "reason": reason, "time": contract.iso()})
    except CommandError as exc:
        log.error("could not write the instance report: %s", exc)
    return 0 if state == contract.CACHE_READY else EXIT_FAILED


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="runtime.pyz cache", description="the warm image cache's builder")
    for name in ("submission", "bucket", "prefix", "group", "instance-id", "region", "bucket-owner"):
        parser.add_argument(f"--{name}", required=name in ("submission", "bucket", "instance-id", "region"),
                            default="")
    args = parser.parse_args(argv)
    return build(CliStore(args.region, args.bucket, args.bucket_owner), Layout(args.prefix), args.submission,
                 args.instance_id)
