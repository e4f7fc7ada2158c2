"""The warm image cache's pure parts (cache/model.py, the pool's data volume mapping, the dry run) and its instance
side (runtime/cache.py, and runtime/host.py's prepare_volume that must not re-format a restored volume) with stub
system commands on PATH."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from submitter import contract
from submitter.backends.pool import pool_plan
from submitter.backends.pool.resources import data_volume
from submitter.cache import model
from submitter.cache.model import Cached
from submitter.plan import PriceLookup, make_plan
from submitter.runtime import cache as runtime_cache
from submitter.runtime import host
from submitter.settings import Settings
from submitter.spec import load

NOW = datetime(2026, 12, 1, 2, 0, 0, tzinfo=timezone.utc)
SPEC = """\
name: cexp
command: [python, train.py]
resources: {instance_types: [c5.large], volume_gb: 20}
limits: {max_runtime: 1h}
"""


def _plan(tmp_path: Path, warm: dict[str, object] | None = None):
    (tmp_path / "job.yaml").write_text(SPEC)
    (tmp_path / "Dockerfile.train").write_text("FROM scratch\n")
    plan = make_plan(load(tmp_path / "job.yaml"), Settings(bucket="bkt"), PriceLookup(None, "unknown"), now=NOW,
                     token="abc123", account="123456789012", backend="pool")
    if warm is not None:
        from dataclasses import replace

        plan = replace(plan, warm_cache=warm)
    return plan


def _cached(sid: str, job: str = "j", days: float = 1, state: str = "completed", digest: str = "sha256:a") -> Cached:
    return Cached(sid, digest, job, contract.iso(NOW - timedelta(days=days)), 8, state, "bkt", "submitter")


def test_the_data_volume_starts_from_the_snapshot_and_is_never_smaller_than_it() -> None:
    assert data_volume(20) == {"VolumeSize": 20, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}
    warm = {"snapshot_id": "snap-1", "size_gb": 30}
    assert data_volume(20, warm)["SnapshotId"] == "snap-1" and data_volume(20, warm)["VolumeSize"] == 30
    assert data_volume(50, warm)["VolumeSize"] == 50 and data_volume(50, warm)["Encrypted"] is True


def test_the_plan_says_which_warm_cache_its_workers_start_from_or_that_there_is_none(tmp_path: Path) -> None:
    from submitter.backends.pool import PoolBackend

    cold = _plan(tmp_path)
    assert "SnapshotId" not in pool_plan(cold).launch_template["BlockDeviceMappings"][0]["Ebs"]
    assert any(line.startswith("warm cache: looked up by the image's digest at submit")
               for line in PoolBackend().summary(cold))
    warm = _plan(tmp_path, {"snapshot_id": "snap-9", "digest": "sha256:abc", "size_gb": 25})
    ebs = pool_plan(warm).launch_template["BlockDeviceMappings"][0]["Ebs"]
    assert ebs["SnapshotId"] == "snap-9" and ebs["VolumeSize"] == 25
    assert "warm cache: snap-9 (image sha256:abc, 25 GB)" in PoolBackend().summary(warm)
    assert PoolBackend().describe(warm)["warm_cache"]["snapshot_id"] == "snap-9"  # --json shows it too
    assert PoolBackend().describe(cold)["warm_cache"]["snapshot_id"] is None


def test_stale_snapshots_are_the_older_ones_of_a_job_the_old_and_the_failed_never_a_mapped_one() -> None:
    found = [_cached("snap-new", days=1), _cached("snap-old", days=3), _cached("snap-mapped", days=5),
             _cached("snap-other", job="k", days=40), _cached("snap-recent", job="m", days=2),
             _cached("snap-failed", job="n", state="error"), _cached("snap-pending", job="j", state="pending", days=0)]
    why = {c.snapshot_id: reason for c, reason in model.stale(found, NOW, timedelta(days=30), {"snap-mapped"})}
    assert set(why) == {"snap-old", "snap-other", "snap-failed"}
    assert why["snap-old"] == "a newer cache of job j exists"
    assert why["snap-other"].startswith("older than 30 day(s)")
    assert why["snap-failed"] == "the snapshot failed"
    zero = {c.snapshot_id for c, _ in model.stale(found, NOW, timedelta(0), {"snap-mapped"})}
    assert zero == {"snap-new", "snap-old", "snap-other", "snap-recent", "snap-failed"}


def test_the_newest_completed_snapshot_of_the_digest_is_the_cache() -> None:
    found = [_cached("a", days=3), _cached("b", days=1), _cached("c", days=0, state="pending"),
             _cached("d", days=0, digest="sha256:other")]
    assert model.newest(found, "sha256:a").snapshot_id == "b"  # type: ignore[union-attr]
    assert model.newest(found, "sha256:none") is None
    assert [c.snapshot_id for c in model.ours([*found, Cached("e", "sha256:a", "j", "", 1, "completed", "x", "")],
                                              "bkt", "/submitter/")] == ["a", "b", "c", "d"]


def test_a_snapshot_is_read_from_its_tags_and_costs_its_size_at_most() -> None:
    c = Cached.of({"SnapshotId": "snap-1", "VolumeSize": 40, "State": "completed", "Tags": [
        {"Key": contract.TAG_CACHE_IMAGE, "Value": "sha256:f"}, {"Key": contract.TAG_JOB, "Value": "j"},
        {"Key": contract.TAG_CACHE_CREATED, "Value": "2026-11-30T02:00:00Z"},
        {"Key": contract.TAG_BUCKET, "Value": "bkt"}, {"Key": contract.TAG_PREFIX, "Value": "p/"}]})
    assert (c.digest, c.job, c.size_gb, c.prefix, c.monthly_usd) == ("sha256:f", "j", 40, "p", 2.0)
    assert c.age(NOW) == timedelta(days=1)


def test_the_dry_run_shows_the_builder_the_snapshot_and_both_costs(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    shown = model.dry_run(plan)
    run = shown["builder"]["run_instances"]
    assert run["InstanceInitiatedShutdownBehavior"] == "stop" and run["InstanceType"] == "c5.large"
    assert run["UserData"].startswith("<base64 of user_data")
    assert shown["snapshot"]["size_gb"] == 20
    assert shown["snapshot"]["snapshot_usd_per_month_at_most"] == 1.0
    assert shown["snapshot"]["fast_snapshot_restore_usd_per_month"] == 547.5
    text = "\n".join(model.describe(shown))
    assert "at most $1.00/month" in text and "$0.75/h per zone" in text and "c5.large" in text
    assert json.dumps(shown)  # --json prints it whole
    # The builder's boot script runs the cache mode, never joins a group.
    data = model.builder_user_data(plan, model.Names.of(plan.submission_id))
    assert "MODE=cache" in data and "GROUP=''" in data


# ------------------------------------------------------------------------------------------ on the instance


def _stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> Path:
    """Stub system commands on PATH; each records its arguments in calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    for name, body in scripts.items():
        path = bin_dir / name.replace("_", ".")
        path.write_text(f"#!/bin/sh\necho \"{name.replace('_', '.')} $*\" >> {log}\n{body}\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


@pytest.mark.parametrize(("filesystem", "formats"), [("ext4", False), ("", True)])
def test_prepare_volume_formats_only_a_blank_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    filesystem: str, formats: bool) -> None:
    log = _stubs(tmp_path, monkeypatch, blkid=f"echo '{filesystem}'", mkfs_ext4="exit 0", mount="exit 0")
    device = tmp_path / "sdf"
    device.write_bytes(b"")
    work = host.prepare_volume("i-1", tmp_path / "mnt", (str(device),), 1)
    assert work == tmp_path / "mnt" / "i-1"
    calls = log.read_text()
    assert ("mkfs.ext4" in calls) is formats  # a volume restored from a cache snapshot keeps its files
    assert f"mount {device} {work}" in calls


def test_warm_uses_the_volume_only_when_its_marker_names_this_image(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _stubs(tmp_path, monkeypatch, systemctl="exit 3")  # no systemd-run engine: a sandbox host
    assert runtime_cache.warm(tmp_path, "reg/x@sha256:1").startswith("warm cache: none (a blank data volume)")
    runtime_cache.write_marker(tmp_path, "reg/x@sha256:1", "2026-12-01T00:00:00Z")
    assert json.loads((tmp_path / contract.CACHE_MARKER).read_text())["digest"] == "sha256:1"
    line = runtime_cache.warm(tmp_path, "reg/x@sha256:1")
    assert line.startswith("warm cache: the volume holds reg/x@sha256:1 (cached 2026-12-01T00:00:00Z)")
    assert "no systemd-run docker engine here" in line
    assert "not this image" in runtime_cache.warm(tmp_path, "reg/x@sha256:2")


def test_on_a_systemd_host_docker_storage_moves_to_the_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _stubs(tmp_path, monkeypatch, systemctl="exit 0")
    config = tmp_path / "etc" / "daemon.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"max-concurrent-downloads": 10}))
    work = tmp_path / "work"
    work.mkdir()
    done = runtime_cache.use_volume_storage(work, config)
    assert done == f"docker's storage is {work / 'docker'}"
    assert json.loads(config.read_text()) == {"max-concurrent-downloads": 10, "data-root": str(work / "docker")}
    assert "systemctl restart docker" in log.read_text()


def test_the_builder_keeps_the_boots_downloaded_packages_on_the_volume(tmp_path: Path) -> None:
    source, work = tmp_path / "downloaded", tmp_path / "work"
    work.mkdir()
    assert runtime_cache.keep_packages(work, source) == []  # the boot kept none (the image had every tool)
    assert not (work / contract.CACHE_PACKAGES).exists()
    source.mkdir()
    for name in ("awscli-2.rpm", "e2fsprogs.rpm", "repomd.xml"):
        (source / name).write_text(name)
    (work / contract.CACHE_PACKAGES).mkdir()
    (work / contract.CACHE_PACKAGES / "stale.rpm").write_text("an older build's")
    assert runtime_cache.keep_packages(work, source) == ["awscli-2.rpm", "e2fsprogs.rpm"]
    kept = work / contract.CACHE_PACKAGES
    assert sorted(p.name for p in kept.iterdir()) == ["awscli-2.rpm", "e2fsprogs.rpm"]
    assert (kept / "awscli-2.rpm").read_text() == "awscli-2.rpm"
    marker = runtime_cache.write_marker(work, "reg/x@sha256:1", "2026-12-01T00:00:00Z", ["awscli-2.rpm"])
    assert runtime_cache.read_marker(work) == marker and marker["packages"] == ["awscli-2.rpm"]
