"""Checkpoint manifests (runtime/checkpoints.py): a sync writes its manifest only after every file it names is
in the store; restore takes the newest manifest whose files verify and falls back past a torn one (missing
file, wrong size, wrong SHA-256, a forged path); old generations are pruned; the stale warning."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
from runtime_memory import MemoryStore

from submitter import contract
from submitter.runtime import checkpoints as ck
from submitter.runtime.checkpoints import Checkpoints

RUN = "exp1-20261130-120000-abcdef-3"
LAYOUT = contract.Layout("p")
PREFIX = LAYOUT.checkpoints(RUN)


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _synced(store: MemoryStore, local: Path, rounds: list[dict[str, bytes]]) -> Checkpoints:
    """A run that synced each round of files in turn (one attempt), like the periodic sync does."""
    ckpt = Checkpoints(store, LAYOUT, RUN)
    ckpt.restore(local)
    for files in rounds:
        _write(local, files)
        assert ckpt.sync(local, attempt=1) is not None
    return ckpt


def _restore(store: MemoryStore, dest: Path) -> Checkpoints:
    ckpt = Checkpoints(store, LAYOUT, RUN)
    ckpt.restore(dest)
    return ckpt


def _manifest(store: MemoryStore, number: int) -> dict:
    return dict(store.json(LAYOUT.checkpoint_manifest(RUN, number)))


def test_a_sync_uploads_a_generation_then_the_manifest_naming_size_and_sha256(tmp_path: Path) -> None:
    store = MemoryStore()
    local = tmp_path / "ckpt"
    local.mkdir()
    _synced(store, local, [{"model.pt": b"weights-1", "sub/opt.pt": b"opt-1"}])
    doc = _manifest(store, 1)
    assert doc["number"] == 1 and doc["attempt"] == 1 and contract.parse_iso(doc["written_at"]) is not None
    by_path = {f["path"]: f for f in doc["files"]}
    assert by_path["model.pt"] == {"path": "model.pt", "key": LAYOUT.checkpoint_generation(RUN, 1) + "model.pt",
                                   "size": 9, "sha256": hashlib.sha256(b"weights-1").hexdigest()}
    assert store.objects[by_path["sub/opt.pt"]["key"]] == b"opt-1"


def test_an_unchanged_file_is_not_uploaded_again_and_an_unchanged_set_writes_no_manifest(tmp_path: Path) -> None:
    store = MemoryStore()
    local = tmp_path / "ckpt"
    local.mkdir()
    ckpt = _synced(store, local, [{"a": b"1", "b": b"1"}, {"b": b"2"}])
    files = {f["path"]: f["key"] for f in _manifest(store, 2)["files"]}
    assert files == {"a": LAYOUT.checkpoint_generation(RUN, 1) + "a", "b": LAYOUT.checkpoint_generation(RUN, 2) + "b"}
    os.utime(local / "a")  # touched, same bytes: the old key still serves
    assert ckpt.sync(local, attempt=1) is None
    assert not store.exists(LAYOUT.checkpoint_manifest(RUN, 3))


def test_restore_takes_the_newest_manifest_and_a_resumed_sync_continues_the_numbers(tmp_path: Path) -> None:
    store = MemoryStore()
    _synced(store, tmp_path / "one", [{"step": b"1"}, {"step": b"2"}])
    dest = tmp_path / "two"
    dest.mkdir()
    ckpt = _restore(store, dest)
    assert (dest / "step").read_bytes() == b"2" and ckpt.current is not None and ckpt.current.number == 2
    assert ckpt.note is None
    assert ckpt.sync(dest, attempt=2) is None  # what it restored is what the manifest has: nothing to upload
    (dest / "step").write_bytes(b"3")
    assert ckpt.sync(dest, attempt=2).number == 3  # type: ignore[union-attr]
    assert _manifest(store, 3)["attempt"] == 2


def test_a_sync_cut_off_mid_upload_writes_no_manifest_and_the_previous_one_is_restored(tmp_path: Path) -> None:
    class Failing(MemoryStore):
        cut = False

        def upload_file(self, path: Path, key: str) -> None:
            if self.cut and key.endswith("z-second"):
                raise OSError("connection reset")
            super().upload_file(path, key)

    store = Failing()
    local = tmp_path / "ckpt"
    local.mkdir()
    ckpt = _synced(store, local, [{"a-first": b"old", "z-second": b"old"}])
    store.cut = True
    _write(local, {"a-first": b"new", "z-second": b"new"})
    with pytest.raises(OSError, match="connection reset"):
        ckpt.sync(local, attempt=1)
    assert store.objects[LAYOUT.checkpoint_generation(RUN, 2) + "a-first"] == b"new"  # uploaded before the cut
    assert not store.exists(LAYOUT.checkpoint_manifest(RUN, 2))
    dest = tmp_path / "resumed"
    restored = _restore(store, dest)
    assert (dest / "a-first").read_bytes() == b"old" and restored.current.number == 1  # type: ignore[union-attr]
    assert restored.next_number == 2


@pytest.mark.parametrize("tear", ["missing", "size", "hash", "path", "key", "json"])
def test_a_torn_manifest_falls_back_to_the_previous_and_says_so(tmp_path: Path, tear: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    _synced(store, tmp_path / "one", [{"w.pt": b"good", "keep": b"k"}, {"w.pt": b"better"}])
    key2 = LAYOUT.checkpoint_generation(RUN, 2) + "w.pt"
    doc = _manifest(store, 2)
    if tear == "missing":
        del store.objects[key2]
    elif tear == "size":
        store.objects[key2] = b"bett"
    elif tear == "hash":
        store.objects[key2] = b"BETTER"
    elif tear == "path":
        doc["files"][0]["path"] = "../../../etc/cron.d/x"
    elif tear == "key":
        doc["files"][0]["key"] = LAYOUT.status(RUN)
    else:
        store.objects[LAYOUT.checkpoint_manifest(RUN, 2)] = b'{"number": 2, "files": [{'
    if tear in ("path", "key"):
        store.put_json(LAYOUT.checkpoint_manifest(RUN, 2), doc)
    dest = tmp_path / "resumed"
    dest.mkdir()
    with caplog.at_level(logging.INFO, logger="submitter.runtime"):
        ckpt = _restore(store, dest)
    assert (dest / "w.pt").read_bytes() == b"good" and (dest / "keep").read_bytes() == b"k"
    assert sorted(p.name for p in dest.rglob("*")) == ["keep", "w.pt"]  # nothing of the torn set is left
    assert ckpt.current is not None and ckpt.current.number == 1 and ckpt.next_number == 3
    assert ckpt.note is not None and ckpt.note.startswith("restored manifest 1; passed over manifest 2 (")
    assert "fell back to manifest 1" in caplog.text and "checkpoint manifest 2 not restored" in caplog.text
    assert not (tmp_path / "etc").exists()


def test_no_manifest_verifies_the_run_starts_without_checkpoints(tmp_path: Path) -> None:
    store = MemoryStore()
    _synced(store, tmp_path / "one", [{"w.pt": b"good"}])
    store.objects[LAYOUT.checkpoint_generation(RUN, 1) + "w.pt"] = b"evil"
    dest = tmp_path / "resumed"
    dest.mkdir()
    ckpt = _restore(store, dest)
    assert list(dest.iterdir()) == [] and ckpt.current is None
    assert ckpt.note is not None and "no checkpoint manifest verified" in ckpt.note and "SHA-256" in ckpt.note


def test_checkpoints_of_an_older_version_without_manifest_are_restored_as_they_are(tmp_path: Path) -> None:
    store = MemoryStore()
    store.put_bytes(PREFIX + "checkpoint.json", b'{"epoch": 2}')
    dest = tmp_path / "resumed"
    ckpt = _restore(store, dest)
    assert (dest / "checkpoint.json").read_bytes() == b'{"epoch": 2}'
    assert ckpt.note is not None and "older version" in ckpt.note and ckpt.next_number == 1


def test_after_a_sync_only_the_last_two_manifests_and_their_files_are_kept(tmp_path: Path) -> None:
    store = MemoryStore()
    local = tmp_path / "ckpt"
    local.mkdir()
    _synced(store, local, [{"const": b"c", "step": b"1"}, {"step": b"2"}, {"step": b"3"}, {"step": b"4"}])
    store.put_bytes(LAYOUT.checkpoint_generation(RUN, 4) + "extra", b"from a job-named file: not ours to judge")
    manifests = sorted(k for k in store.keys(PREFIX) if contract.manifest_number(k, PREFIX) is not None)
    assert manifests == [LAYOUT.checkpoint_manifest(RUN, 3), LAYOUT.checkpoint_manifest(RUN, 4)]
    generations = sorted(k[len(PREFIX):] for k in store.keys(PREFIX) if "/generations/" in k)
    assert generations == ["generations/000001/const", "generations/000003/step", "generations/000004/extra",
                           "generations/000004/step"]


def test_a_link_in_the_checkpoints_dir_is_never_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    local = tmp_path / "ckpt"
    local.mkdir()
    (tmp_path / "secret").write_bytes(b"host secret")
    (local / "leak").symlink_to(tmp_path / "secret")
    with caplog.at_level(logging.WARNING, logger="submitter.runtime"):
        _synced(store, local, [{"w.pt": b"w"}, {"w.pt": b"w2"}])
    assert caplog.text.count(f"{local}/leak (links are never followed") == 1  # named once, not every sync
    assert [f["path"] for f in _manifest(store, 1)["files"]] == ["w.pt"]
    assert not any(v == b"host secret" for v in store.objects.values())


def test_the_stale_warning_after_the_configured_quiet_time(tmp_path: Path) -> None:
    assert ck.stale_warning(1000.0, 1000.0 + 1800, 1800) is None
    warning = ck.stale_warning(1000.0, 1000.0 + 1900, 1800)
    assert warning == ("no new checkpoint for 31 min (limits.checkpoint_warn_after is 30 min): the job may have "
                       "stopped checkpointing")
    local = tmp_path / "ckpt"
    _write(local, {"a": b"1", "d/b": b"2"})
    os.utime(local / "a", (100.0, 100.0))
    os.utime(local / "d" / "b", (200.0, 200.0))
    assert ck.newest_mtime(local) == 200.0 and ck.newest_mtime(tmp_path / "none") is None


def test_manifest_keys_are_only_the_runs_own(tmp_path: Path) -> None:
    assert contract.manifest_number(LAYOUT.checkpoint_manifest(RUN, 12), PREFIX) == 12
    # a job's own file named like a manifest, inside a generation, is not one
    assert contract.manifest_number(LAYOUT.checkpoint_generation(RUN, 1) + "manifests/000009.json", PREFIX) is None
    assert contract.generation_number(LAYOUT.checkpoint_generation(RUN, 7) + "a/b", PREFIX) == 7
    assert contract.generation_number(PREFIX + "checkpoint.json", PREFIX) is None
    assert json.loads(json.dumps(ck.Manifest(1, 1, "t", ()).to_json()))["version"] == 1


def test_an_attempt_warns_in_its_status_fields_and_says_it_once_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import time

    from submitter.runtime.lifecycle import Attempt
    from submitter.runtime.seams import Host, Process, Settlement

    class Dirs(Process):
        def __init__(self, root: Path) -> None:
            self.data_dir, self.outputs_dir = root / "data", root / "outputs"
            self.checkpoints_dir, self.logs_dir = root / "checkpoints", root / "logs"

    store = MemoryStore()
    sub = {"submission_id": "s", "checkpoints": "/checkpoints", "checkpoint_warn_after": 60}
    attempt = Attempt(Host(store, LAYOUT, sub, {}), {"run_id": RUN}, contract.Status(run_id=RUN), Dirs(tmp_path),
                      Settlement())
    _write(attempt.process.checkpoints_dir, {"w.pt": b"w"})
    attempt.started_wall = time.time() - 30
    assert attempt.checkpoint_fields() == {"checkpoint_at": None, "checkpoint_note": None, "checkpoint_warning": None}
    attempt.checkpoint_fields()
    old = time.time() - 200
    os.utime(attempt.process.checkpoints_dir / "w.pt", (old, old))
    attempt.started_wall = old
    with caplog.at_level(logging.WARNING, logger="submitter.runtime"):
        first, second = attempt.checkpoint_fields(), attempt.checkpoint_fields()
    assert first["checkpoint_warning"].startswith("no new checkpoint for 3 min (limits.checkpoint_warn_after is 1 min)")
    assert second == first and caplog.text.count("no new checkpoint for") == 1
    (attempt.process.checkpoints_dir / "w2.pt").write_bytes(b"new")  # a new checkpoint clears it
    assert attempt.checkpoint_fields()["checkpoint_warning"] is None
    attempt.sync_checkpoints()
    assert attempt.checkpoint_fields(stale=False)["checkpoint_at"] == _manifest(store, 1)["written_at"]
    assert Attempt(Host(store, LAYOUT, {**sub, "checkpoints": None}, {}), {"run_id": RUN}, contract.Status(RUN),
                   Dirs(tmp_path), Settlement()).checkpoint_fields() == {}
