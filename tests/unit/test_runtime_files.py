"""The path rules that keep a run's files in their directory: run ids and keys read back (contract), and the
runtime's walk/open/download checks (runtime/files.py) against links a hostile job leaves."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from submitter import contract
from submitter.runtime import files

SUB = "exp1-20261130-120000-abcdef"


# ------------------------------------------------------------------------------------------ contract rules


def test_a_run_id_is_its_submission_or_the_submission_and_an_index() -> None:
    assert contract.submission_of(SUB) == SUB
    assert contract.submission_of(f"{SUB}-12") == SUB
    assert contract.is_run_of(SUB, SUB) and contract.is_run_of(f"{SUB}-0", SUB)
    for forged in ("../../x", f"{SUB}-0/../x", f"{SUB}-x", f"{SUB}x", f"{SUB}-", f"{SUB}-0-1", f"/{SUB}",
                   "exp1-20261130-120000-000000-0", f"{SUB}-20261130-120000-abcdef-0", "", f"{SUB}-٣"):
        assert not contract.is_run_of(forged, SUB), forged
    for not_a_run in ("../../x", "x", f"{SUB}/", f"{SUB}-0/..", "EXP1-20261130-120000-abcdef"):
        assert contract.submission_of(not_a_run) is None, not_a_run


@pytest.mark.parametrize("rel", ["a.txt", "a/b/c.bin", "..a", "a..", ".hidden", "a b/ü.txt"])
def test_safe_relative_keeps_names_inside(rel: str) -> None:
    assert contract.safe_relative(rel) == rel


@pytest.mark.parametrize("rel", ["", "..", "../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", ".", "a/",
                                 "a\\..\\..\\x", "a\0b"])
def test_safe_relative_refuses_what_would_leave_the_directory(rel: str) -> None:
    assert contract.safe_relative(rel) is None


# ------------------------------------------------------------------------------------------ the runtime's walk


def _hostile_tree(root: Path, host_file: Path) -> Path:
    """outputs/ as a hostile job leaves it: real files, and links to the host (/, /etc, a file) and inside."""
    out = root / "outputs"
    (out / "sub").mkdir(parents=True)
    (out / "model.bin").write_bytes(b"weights")
    (out / "sub" / "metrics.json").write_text("{}")
    os.symlink("/", out / "root")
    os.symlink("/etc", out / "sub" / "etc")
    os.symlink(host_file, out / "secret")
    os.symlink("model.bin", out / "inside")  # inside the tree: skipped as well (docs/decisions.md)
    os.symlink("sub", out / "subdir-link")
    os.symlink("/nowhere", out / "dangling")
    os.mkfifo(out / "pipe")
    return out


def test_scan_lists_regular_files_and_names_every_link_without_entering_one(tmp_path: Path) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_text("host")
    out = _hostile_tree(tmp_path, host_file)
    began = time.monotonic()
    found, links = files.scan(out)
    assert time.monotonic() - began < 2  # a link to / is not walked
    assert found == ["model.bin", "sub/metrics.json"]
    assert links == ["dangling", "inside", "root", "secret", "sub/etc", "subdir-link"]


def test_a_linked_directory_itself_is_one_link_and_nothing_below_it(tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / "outputs")
    assert files.scan(tmp_path / "outputs") == ([], ["."])
    assert files.scan(tmp_path / "missing") == ([], [])


def test_skip_links_names_each_link_once_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    os.symlink("/etc/passwd", out / "passwd")
    told: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="submitter.runtime"):
        assert files.skip_links(out, "s3://b/p/runs/r/outputs/", told) == ["passwd"]
        files.skip_links(out, "s3://b/p/runs/r/outputs/", told)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"{out}/passwd" in lines[0] and "skipped the symbolic link" in lines[0]


def test_open_below_refuses_a_link_swapped_in_after_the_scan(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    (out / "d").mkdir(parents=True)
    (out / "d" / "f").write_bytes(b"ok")
    fd = files.open_below(out, "d/f")
    with os.fdopen(fd, "rb") as handle:
        assert handle.read() == b"ok"
    (out / "d" / "f").unlink()
    os.symlink("/etc/hostname", out / "d" / "f")  # the file became a link
    with pytest.raises(OSError):
        files.open_below(out, "d/f")
    (out / "d" / "f").unlink()
    (out / "d").rmdir()
    os.symlink("/etc", out / "d")  # a directory on the way became a link
    with pytest.raises(OSError):
        files.open_below(out, "d/hostname")
    os.mkfifo(out / "pipe")  # opened without blocking, then refused
    with pytest.raises(OSError, match="not a regular file"):
        files.open_below(out, "pipe")


def test_download_targets_refuse_keys_leaving_the_target_and_links_on_the_way(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "checkpoints"
    dest.mkdir()
    os.symlink("/etc", dest / "etc")
    prefix = "p/runs/r/checkpoints/"
    keys = [prefix + rel for rel in ("ok.pt", "a/b.pt", "../../../x", "a/../../y", "/etc/cron.d/z", "a//c",
                                     "etc/passwd", "dir/")]
    with caplog.at_level(logging.WARNING, logger="submitter.runtime"):
        targets = files.download_targets(prefix, keys, dest, "s3://b/" + prefix)
    assert targets == [(prefix + "ok.pt", dest / "ok.pt"), (prefix + "a/b.pt", dest / "a" / "b.pt")]
    refused = "\n".join(r.getMessage() for r in caplog.records)
    for rel in ("../../../x", "a/../../y", "/etc/cron.d/z", "a//c", "etc/passwd"):
        assert repr(prefix + rel) in refused
    assert refused.count("refused the key") == 5


def test_link_on_way_finds_a_link_anywhere_below_the_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    os.symlink("/etc", tmp_path / "a" / "b")
    assert files.link_on_way(tmp_path, "a/b/c") == str(tmp_path / "a" / "b")
    assert files.link_on_way(tmp_path, "a/x/c") is None
    assert files.link_on_way(tmp_path, "") is None


def test_snapshot_holds_hard_links_of_the_regular_files_only(tmp_path: Path) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_text("host")
    out = _hostile_tree(tmp_path, host_file)
    snap = files.snapshot(out)
    assert snap is not None and snap.parent == out.parent and snap.name.startswith(".outputs-upload-")
    inside = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if not p.is_dir() or p.is_symlink())
    assert inside == ["model.bin", "sub/metrics.json"]
    assert not any(p.is_symlink() for p in snap.rglob("*"))
    assert (snap / "model.bin").stat().st_ino == (out / "model.bin").stat().st_ino  # linked, not copied
    shutil.rmtree(snap)
    assert (out / "model.bin").read_bytes() == b"weights" and host_file.read_text() == "host"

