"""A run's checkpoints in S3: each sync uploads the changed files into a new generation and then writes a
manifest (path, size, SHA-256, the S3 key, the attempt, the time) naming only files already whole in S3;
restore takes the newest manifest whose files all verify, falling back to older ones (docs/runtime-contract.md,
"Checkpoints"). Also how long the job has not written a checkpoint (the stale warning).

The job's checkpoints directory is untrusted: files are opened without following links (files.open_below) and
hashed while they are copied out of the job's reach, so the digest is of exactly the bytes uploaded. A
manifest read back is checked like any key read back (contract.safe_relative) before it becomes a path."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitter import contract
from submitter.contract import Layout
from submitter.runtime import files
from submitter.runtime.store import Store

log = logging.getLogger("submitter.runtime")

CHUNK = 1 << 20  # SHA-256 is computed in chunks: checkpoints may be many GB
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Entry:
    """One file of a manifest: its path below the checkpoints dir and where its bytes are in S3."""

    path: str
    key: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "key": self.key, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    number: int
    attempt: int
    written_at: str
    entries: tuple[Entry, ...]

    def to_json(self) -> dict[str, Any]:
        return {"version": contract.CHECKPOINT_MANIFEST_VERSION, "number": self.number, "attempt": self.attempt,
                "written_at": self.written_at, "files": [e.to_json() for e in self.entries]}


def parse_manifest(doc: Any, number: int, layout: Layout, run_id: str) -> Manifest:
    """The manifest in `doc` (read from Layout.checkpoint_manifest(run_id, number)); ValueError saying what is
    wrong when it is not one this run could have written: a path that would leave the checkpoints dir, a key
    outside the run's generations, a size or digest that is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise ValueError("not a checkpoint manifest")
    if doc.get("number") != number:
        raise ValueError(f"it says it is number {doc.get('number')!r}")
    prefix = layout.checkpoints(run_id)
    entries = []
    for item in doc["files"]:
        if not isinstance(item, dict):
            raise ValueError("a file entry is not an object")
        path, key, size, digest = item.get("path"), item.get("key"), item.get("size"), item.get("sha256")
        if not isinstance(path, str) or contract.safe_relative(path) is None:
            raise ValueError(f"the path {path!r} would leave the checkpoints directory")
        if not isinstance(key, str) or contract.generation_number(key, prefix) is None or \
                contract.safe_relative(key[len(prefix):]) is None:
            raise ValueError(f"{path}: the key {key!r} is not in this run's checkpoint generations")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{path}: the size {size!r} is not a byte count")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
            raise ValueError(f"{path}: {digest!r} is not a SHA-256 digest")
        entries.append(Entry(path, key, size, digest))
    return Manifest(number, int(doc.get("attempt") or 0), str(doc.get("written_at") or ""), tuple(entries))


def sha256_of(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of the file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def verify(entries: tuple[Entry, ...], root: Path) -> str | None:
    """What is wrong with the files of `entries` under `root` (the first: missing, wrong size, wrong SHA-256),
    None when all are whole."""
    for entry in entries:
        path = root / entry.path
        if not path.is_file() or path.is_symlink():
            return f"{entry.path}: missing"
        size, digest = sha256_of(path)
        if size != entry.size:
            return f"{entry.path}: {size} bytes, the manifest says {entry.size}"
        if digest != entry.sha256:
            return f"{entry.path}: SHA-256 {digest[:12]}..., the manifest says {entry.sha256[:12]}..."
    return None


def copy_hashing(source_fd: int, target: Path) -> tuple[int, str]:
    """Copy an open file to `target` (new), hashing the bytes copied: (size, SHA-256 hex)."""
    digest, size = hashlib.sha256(), 0
    with os.fdopen(source_fd, "rb") as src, open(target, "xb") as dst:
        for block in iter(lambda: src.read(CHUNK), b""):
            digest.update(block)
            dst.write(block)
            size += len(block)
    return size, digest.hexdigest()


def newest_mtime(local: Path) -> float | None:
    """The newest modification time among the regular files below `local` (links not followed), or None."""
    newest = None
    for rel in files.scan(local)[0]:
        try:
            info = os.stat(local / rel, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            newest = info.st_mtime if newest is None else max(newest, info.st_mtime)
    return newest


def stale_warning(last_change: float, now: float, warn_after: float) -> str | None:
    """The status warning when the job has written no checkpoint for longer than `warn_after` seconds."""
    quiet = now - last_change
    if quiet <= warn_after:
        return None
    return (f"no new checkpoint for {int(quiet // 60)} min (limits.checkpoint_warn_after is "
            f"{_minutes(warn_after)}): the job may have stopped checkpointing")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min"


def _scratch(near: Path, what: str) -> Path:
    """A new directory beside `near` (same filesystem, outside the job's mount), else in the system temp dir."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{near.name}-{what}-", dir=str(near.parent)))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=f"submitter-{what}-"))


@dataclass
class Checkpoints:
    """One run's checkpoints as this attempt sees them."""

    store: Store
    layout: Layout
    run_id: str
    current: Manifest | None = None  # the newest complete manifest: restored, or written by this attempt
    next_number: int = 1
    note: str | None = None  # said in the status when restore had to fall back or found no manifest
    known: dict[str, tuple[int, int, Entry]] = field(default_factory=dict)  # path -> (size, mtime_ns, entry)
    links_told: set[str] = field(default_factory=set)  # symbolic links already named in the run's log

    @property
    def prefix(self) -> str:
        return self.layout.checkpoints(self.run_id)

    def _manifest_keys(self, keys: list[str]) -> list[tuple[int, str]]:
        numbered = [(contract.manifest_number(k, self.prefix), k) for k in keys]
        return sorted(((n, k) for n, k in numbered if n is not None), reverse=True)

    # ------------------------------------------------------------------------------------ restore

    def restore(self, dest: Path) -> None:
        """The newest manifest whose files all verify, into `dest`; each one passed over is said in the log."""
        keys = self.store.keys(self.prefix)
        manifests = self._manifest_keys(keys)
        self.next_number = manifests[0][0] + 1 if manifests else 1
        if not manifests:
            if keys:  # written by a version without manifests: restored as it is, unverified
                count = self.store.download(self.layout.uri(self.store.bucket, self.prefix), dest, "dir")
                self.note = "restored without a manifest (checkpoints written by an older version), unverified"
                log.info("checkpoints restored: %d file(s), %s", count, self.note)
            else:
                log.info("checkpoints: none yet")
            return
        present = set(keys)
        passed: list[str] = []
        for number, key in manifests:
            problem, manifest = self._try(number, key, present, dest)
            if manifest is None:
                log.warning("checkpoint manifest %d not restored: %s", number, problem)
                passed.append(f"manifest {number} ({problem})")
                continue
            self.current = manifest
            if passed:
                self.note = f"restored manifest {number}; passed over {'; '.join(passed)}"
                log.warning("checkpoints: fell back to manifest %d (attempt %d, %s): %d file(s) restored and "
                            "verified", number, manifest.attempt, manifest.written_at, len(manifest.entries))
            else:
                log.info("checkpoints restored from manifest %d (attempt %d, %s): %d file(s), verified",
                         number, manifest.attempt, manifest.written_at, len(manifest.entries))
            return
        self.note = f"no checkpoint manifest verified ({'; '.join(passed)}): started without checkpoints"
        log.error("checkpoints: %s", self.note)

    def _try(self, number: int, key: str, present: set[str], dest: Path) -> tuple[str, Manifest | None]:
        """(what is wrong, None) or ("", the manifest) with its files verified and moved into `dest`."""
        try:
            manifest = parse_manifest(self.store.read_json(key), number, self.layout, self.run_id)
        except ValueError as exc:
            return f"unreadable: {exc}", None
        missing = [e.path for e in manifest.entries if e.key not in present]
        if missing:
            return f"{missing[0]}: not in S3 (a sync cut off?)", None
        staging = _scratch(dest, "restore")
        try:
            for entry in manifest.entries:
                self.store.download(self.layout.uri(self.store.bucket, entry.key), staging / entry.path, "file")
            problem = verify(manifest.entries, staging)
            if problem:
                return problem, None
            for entry in manifest.entries:
                target = dest / entry.path
                if files.link_on_way(dest, entry.path) is not None:
                    return f"{entry.path}: a symbolic link is on its way in {dest}", None
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(staging / entry.path), str(target))
                info = target.stat()
                self.known[entry.path] = (info.st_size, info.st_mtime_ns, entry)
        except Exception as exc:  # a download that fails: this manifest cannot be restored, an older one may
            return f"download failed: {exc}", None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return "", manifest

    # ------------------------------------------------------------------------------------ sync

    def sync(self, local: Path, attempt: int) -> Manifest | None:
        """Upload what changed in `local` as a new generation, then its manifest, then prune; the manifest
        written, or None when nothing changed. Raises when an upload fails: no manifest is written then, and the
        previous one stays in force."""
        number = self.next_number
        generation = self.layout.checkpoint_generation(self.run_id, number)
        files.skip_links(local, self.store.uri(self.prefix), self.links_told)
        names = files.scan(local)[0]
        if not names:
            return None  # an empty directory never supersedes a checkpoint
        scratch = _scratch(local, "sync")
        entries: list[Entry] = []
        fresh: dict[str, tuple[int, int, Entry]] = {}
        try:
            for rel in names:
                try:
                    fd = files.open_below(local, rel)
                except OSError as exc:  # gone, or swapped for a link since the scan: not part of this set
                    log.warning("checkpoint sync: skipped %s (%s)", rel, exc)
                    continue
                info = os.fstat(fd)
                seen = self.known.get(rel)
                if seen and seen[:2] == (info.st_size, info.st_mtime_ns):
                    os.close(fd)
                    entries.append(seen[2])
                    fresh[rel] = seen
                    continue
                copy = scratch / "file"
                size, digest = copy_hashing(fd, copy)
                if seen and (seen[2].size, seen[2].sha256) == (size, digest):
                    entry = seen[2]  # touched, not changed: the bytes already in S3 serve
                else:
                    entry = Entry(rel, generation + rel, size, digest)
                    self.store.upload_file(copy, entry.key)
                copy.unlink()
                entries.append(entry)
                fresh[rel] = (info.st_size, info.st_mtime_ns, entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if self.current is not None and set(entries) == set(self.current.entries):
            return None
        present = set(self.store.keys(self.prefix))
        missing = [e.key for e in entries if e.key not in present]
        if missing:
            raise ValueError(f"{missing[0]} is not in S3 after its upload: manifest {number} not written")
        manifest = Manifest(number, attempt, contract.iso(), tuple(sorted(entries, key=lambda e: e.path)))
        self.store.put_json(self.layout.checkpoint_manifest(self.run_id, number), manifest.to_json())
        previous, self.current, self.next_number = self.current, manifest, number + 1
        self.known = fresh
        log.info("checkpoint manifest %d written: %d file(s), %d uploaded", number, len(entries),
                 sum(1 for e in entries if e.key.startswith(generation)))
        self.prune(present, [m for m in (manifest, previous) if m is not None])
        return manifest

    def prune(self, present: set[str], kept: list[Manifest]) -> None:
        """Delete the manifests and generation files older than the newest that no kept manifest needs. A
        failure is only logged (an older role without s3:DeleteObject): old generations then stay."""
        newest = kept[0].number
        needed = {e.key for m in kept for e in m.entries}
        keep_numbers = {m.number for m in kept}
        doomed = []
        for key in sorted(present):
            made = contract.manifest_number(key, self.prefix)
            if made is not None:
                if made < newest and made not in keep_numbers:
                    doomed.append(key)
                continue
            made = contract.generation_number(key, self.prefix)
            if made is not None and made < newest and key not in needed:
                doomed.append(key)
        try:
            for key in doomed:
                self.store.delete(key)
        except Exception as exc:
            log.warning("checkpoints: could not delete an older generation (%s); it stays in S3", exc)
