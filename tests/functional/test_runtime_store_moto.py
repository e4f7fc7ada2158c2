"""The runtime's boto3 store (Batch images without the AWS CLI) against moto in-process: uploads never follow a
symbolic link out of a run's directory, restores never write outside their target. The CLI store is exercised
the same way by the e2e hostile job (tests/e2e/test_hostile.py), through the real agent."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from submitter.runtime.store_boto3 import Boto3Store

REGION = "us-east-1"
BUCKET = "rstore"
PREFIX = "p/runs/exp1-20261130-120000-abcdef/outputs/"


@pytest.fixture()
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[Boto3Store]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield Boto3Store(REGION, BUCKET)


def _keys(store: Boto3Store, prefix: str) -> list[str]:
    return sorted(k[len(prefix):] for k in store.keys(prefix))


def test_upload_tree_uploads_regular_files_and_names_each_link_once(
        store: Boto3Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_text("the host's")
    out = tmp_path / "outputs"
    (out / "sub").mkdir(parents=True)
    (out / "model.bin").write_bytes(b"weights")
    (out / "sub" / "metrics.json").write_text("{}")
    os.symlink("/", out / "root")
    os.symlink("/etc", out / "sub" / "etc")
    os.symlink(host_file, out / "secret")
    os.symlink("model.bin", out / "inside")
    os.mkfifo(out / "pipe")
    seen: dict[str, tuple[int, int]] = {}
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="submitter.runtime"):
        store.upload_tree(out, PREFIX, seen)
        store.upload_tree(out, PREFIX, seen)  # a later checkpoint sync: nothing new, no second line per link
    assert time.monotonic() - began < 10  # the link to / is not walked
    assert _keys(store, PREFIX) == ["model.bin", "sub/metrics.json"]
    skipped = [r.getMessage() for r in caplog.records if "skipped the symbolic link" in r.getMessage()]
    assert sorted(line.split("skipped the symbolic link ")[1].split(" ")[0] for line in skipped) == sorted(
        f"{out}/{rel}" for rel in ("inside", "root", "secret", "sub/etc"))
    assert all(b"the host's" not in (store.get_bytes(PREFIX + k) or b"") for k in _keys(store, PREFIX))


def test_an_outputs_directory_that_is_itself_a_link_uploads_nothing(store: Boto3Store, tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / "outputs")
    store.upload_tree(tmp_path / "outputs", PREFIX, {})
    assert store.keys(PREFIX) == []


def test_a_restore_refuses_keys_that_would_leave_its_target(
        store: Boto3Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prefix = "p/runs/exp1-20261130-120000-abcdef/checkpoints/"
    for rel in ("step-1.pt", "dir/step-2.pt", "../../../../escaped", "dir/../../../../escaped2", "/tmp/abs-p1",
                "a//b"):
        store.put_bytes(prefix + rel, b"x")
    dest = tmp_path / "work" / "checkpoints"
    with caplog.at_level(logging.WARNING, logger="submitter.runtime"):
        count = store.download(f"s3://{BUCKET}/{prefix}", dest, "dir")
    assert count == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "work/checkpoints/dir/step-2.pt", "work/checkpoints/step-1.pt"]
    assert not Path("/tmp/abs-p1").exists()
    assert sum("refused the key" in r.getMessage() for r in caplog.records) == 4
