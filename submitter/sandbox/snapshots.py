"""EBS snapshots in the sandbox, emulated with the loop-device files that stand for volumes (runner.py).

CreateSnapshot copies its volume's file, sparse-aware, to `$SUBMITTER_HOME/sandbox/snapshots/SNAP.img` before
moto answers (so a snapshot moto calls `completed` holds the volume's bytes of that moment); a volume that EC2
creates from a snapshot (a launch template mapping with SnapshotId) starts as a copy of that file instead of a blank
one; DeleteSnapshot removes the file. What is not emulated: the lazy loading of a restored volume's blocks from S3
(a sandbox volume is whole at once) and Fast Snapshot Restore (docs/sandbox.md).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from submitter.sandbox import state as st

log = logging.getLogger("submitter.sandbox.snapshots")


def directory(paths: st.Paths) -> Path:
    return paths.root / "snapshots"


def snapshot_file(paths: st.Paths, snapshot_id: str) -> Path:
    return directory(paths) / f"{snapshot_id}.img"


def copy_sparse(source: Path, target: Path) -> None:
    """Copy a mostly empty volume file without writing its holes (GNU cp finds them with SEEK_DATA)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    result = subprocess.run(["cp", "--sparse=always", str(source), str(partial)], capture_output=True, text=True,
                            timeout=3600, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise OSError(f"cp {source} {partial}: {result.stderr.strip()}")
    partial.replace(target)


def volume_file(paths: st.Paths, volume_id: str) -> Path | None:
    """The file of a volume the runner made (an instance's record names its volumes' ids), if it still exists."""
    for record_file in paths.instances.glob("*/instance.json"):
        for loop in (st.read_json(record_file) or {}).get("loops", []):
            if loop.get("volume_id") == volume_id and Path(loop["file"]).is_file():
                return Path(loop["file"])
    return None


def make_volume_file(paths: st.Paths, image: Path, size_gib: int, snapshot_id: str | None) -> None:
    """A volume's file: a copy of its snapshot's, grown to the volume's size; else a blank sparse file."""
    image.parent.mkdir(parents=True, exist_ok=True)
    if snapshot_id:
        source = snapshot_file(paths, snapshot_id)
        if not source.is_file():  # the snapshot was made before this sandbox's `up`, or its file was removed
            raise OSError(f"the volume's snapshot {snapshot_id} has no file at {source}")
        copy_sparse(source, image)
        log.info("volume file %s restored from snapshot %s", image, snapshot_id)
    with image.open("ab") as f:
        if f.tell() < size_gib * 1024**3:
            f.truncate(size_gib * 1024**3)  # sparse: only what the instance writes takes space


def install(paths: st.Paths) -> Callable[[], None]:
    """Make moto's CreateSnapshot and DeleteSnapshot copy and remove the volume files (in the daemon's process);
    returns what puts moto's own back (a test)."""
    from moto.ec2.models.elastic_block_store import EBSBackend

    create, delete = EBSBackend.__dict__["create_snapshot"], EBSBackend.__dict__["delete_snapshot"]

    def create_snapshot(self: Any, volume_id: str, description: str, *args: Any, **kwargs: Any) -> Any:
        source = volume_file(paths, volume_id)
        snapshot = create(self, volume_id, description, *args, **kwargs)
        if source is None:  # a volume no instance of the runner has (e.g. made with CreateVolume): an empty disk
            log.warning("snapshot %s of %s: the volume has no file here; the snapshot restores blank",
                        snapshot.id, volume_id)
            make_volume_file(paths, snapshot_file(paths, snapshot.id), int(snapshot.volume.size), None)
            return snapshot
        attached = getattr(getattr(self.get_volume(volume_id), "attachment", None), "instance", None)
        if attached is not None and getattr(attached, "state", "") == "running":
            # AWS allows it (crash-consistent); `submitter cache` stops the instance first for a consistent volume.
            log.warning("snapshot %s of %s while its instance runs: crash-consistent only", snapshot.id, volume_id)
        copy_sparse(source, snapshot_file(paths, snapshot.id))
        log.info("snapshot %s of %s: %s copied", snapshot.id, volume_id, source)
        return snapshot

    def delete_snapshot(self: Any, snapshot_id: str) -> Any:
        snapshot = delete(self, snapshot_id)
        snapshot_file(paths, snapshot_id).unlink(missing_ok=True)
        return snapshot

    EBSBackend.create_snapshot = create_snapshot  # type: ignore[method-assign]
    EBSBackend.delete_snapshot = delete_snapshot  # type: ignore[method-assign]

    def undo() -> None:
        EBSBackend.create_snapshot = create  # type: ignore[method-assign]
        EBSBackend.delete_snapshot = delete  # type: ignore[method-assign]

    return undo
