"""The sandbox's EBS snapshots (submitter/sandbox/snapshots.py) against moto in-process: CreateSnapshot copies the
volume's file sparse-aware, a volume made from the snapshot starts as its copy (grown to its size), and
DeleteSnapshot removes the file. (The runner and the builder use them in tests/e2e/test_cache.py.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from submitter.sandbox import snapshots
from submitter.sandbox import state as st

REGION = "us-east-1"


@pytest.fixture()
def ec2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, st.Paths]]:
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    paths = st.Paths(tmp_path / "sandbox")
    undo = snapshots.install(paths)
    try:
        with mock_aws():
            yield boto3.client("ec2", region_name=REGION), paths
    finally:
        undo()


def _volume_file(paths: st.Paths, volume_id: str, data: bytes, size: int) -> Path:
    """A volume's file as the runner makes it, with `data` at 1 MiB in and a hole everywhere else."""
    image = paths.instance("i-1") / "volumes" / "dev_sdf.img"
    snapshots.make_volume_file(paths, image, 0, None)
    with image.open("r+b") as f:
        f.truncate(size)
        f.seek(1024 * 1024)
        f.write(data)
    st.write_json(paths.instance("i-1") / "instance.json",
                  {"loops": [{"device": "/dev/loop99", "file": str(image), "as": "/dev/sdf", "volume_id": volume_id}]})
    return image


def test_a_snapshot_is_a_sparse_copy_a_volume_restores_from_it_and_delete_removes_it(ec2: Any) -> None:
    client, paths = ec2
    volume = client.create_volume(Size=1, AvailabilityZone=f"{REGION}a")["VolumeId"]
    _volume_file(paths, volume, b"submitter-cache marker", 64 * 1024 * 1024)
    snap = client.create_snapshot(VolumeId=volume)["SnapshotId"]
    copy = snapshots.snapshot_file(paths, snap)
    assert copy.read_bytes()[1024 * 1024:1024 * 1024 + 22] == b"submitter-cache marker"
    assert copy.stat().st_size == 64 * 1024 * 1024
    assert os.stat(copy).st_blocks * 512 < 8 * 1024 * 1024  # the holes stayed holes

    restored = paths.instance("i-2") / "volumes" / "dev_sdf.img"
    snapshots.make_volume_file(paths, restored, 1, snap)  # a 1 GiB volume from the 64 MiB snapshot
    assert restored.stat().st_size == 1024**3
    with restored.open("rb") as f:
        f.seek(1024 * 1024)
        assert f.read(22) == b"submitter-cache marker"

    client.delete_snapshot(SnapshotId=snap)
    assert not copy.exists()
    with pytest.raises(OSError, match=f"snapshot {snap} has no file"):
        snapshots.make_volume_file(paths, paths.instance("i-3") / "volumes" / "x.img", 1, snap)


def test_a_snapshot_of_a_volume_the_runner_does_not_hold_restores_blank(ec2: Any) -> None:
    client, paths = ec2
    volume = client.create_volume(Size=1, AvailabilityZone=f"{REGION}a")["VolumeId"]
    snap = client.create_snapshot(VolumeId=volume)["SnapshotId"]
    assert client.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "completed"
    blank = snapshots.snapshot_file(paths, snap)
    assert blank.stat().st_size == 1024**3 and os.stat(blank).st_blocks == 0
