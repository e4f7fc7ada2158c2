"""A run's files on the host, walked and opened without ever leaving their directory.

The run's outputs and checkpoints directories are written by the job, which is not trusted with anything
beyond its run (docs/decisions.md, threat model), while the runtime reads and writes them as root on the host.
So a symbolic link there is never followed: it is listed, skipped and named in the run's agent log, whether it
points inside the tree or out of it (a link cannot be judged safe without following it, and its target can
change between the check and the read). Keys read back from S3 are checked the same way before they become
paths (contract.safe_relative), and a download never writes through an existing link."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from submitter.contract import safe_relative

log = logging.getLogger("submitter.runtime")


def scan(local: Path) -> tuple[list[str], list[str]]:
    """(regular files, symbolic links) below `local` as sorted relative POSIX paths, found without following any
    link (os.fwalk with follow_symlinks=False never enters a linked directory). `local` itself being a link
    counts as one link, "."; FIFOs, sockets and devices are neither, and are left alone."""
    if local.is_symlink():
        return [], ["."]
    if not local.is_dir():
        return [], []
    files: list[str] = []
    links: list[str] = []
    for top, dirs, names, dirfd in os.fwalk(str(local), follow_symlinks=False):
        rel_top = os.path.relpath(top, str(local))
        for name in dirs + names:
            try:
                mode = os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode
            except OSError:  # gone since it was listed: nothing to upload
                continue
            rel = name if rel_top == "." else f"{rel_top}/{name}"
            if stat.S_ISLNK(mode):
                links.append(rel)
            elif stat.S_ISREG(mode) and name in names:
                files.append(rel)
    return sorted(files), sorted(links)


def skip_links(local: Path, what: str, told: set[str] | None = None) -> list[str]:
    """The links below `local`, each named once (per `told`) in the run's log as skipped; returns them all."""
    _, links = scan(local)
    for rel in links:
        if told is not None and rel in told:
            continue
        if told is not None:
            told.add(rel)
        where = str(local) if rel == "." else f"{local}/{rel}"
        log.warning("%s: skipped the symbolic link %s (links are never followed out of a run's directory)",
                    what, where)
    return links


def snapshot(local: Path) -> Path | None:
    """The tree's regular files hard-linked into a new directory beside `local`, outside the job's reach (the
    container mounts `local` only): what the CLI store syncs, so a file the job swaps for a link after the
    listing cannot make `aws s3 sync` read through it (a link swapped in before `os.link` is linked as the link,
    which `--no-follow-symlinks` skips). None when it cannot be made (another filesystem, no permission): the
    caller syncs `local` itself. The caller removes it (shutil.rmtree unlinks links, never follows them)."""
    try:
        snap = Path(tempfile.mkdtemp(prefix=f".{local.name}-upload-", dir=str(local.parent)))
    except OSError:
        return None
    try:
        for top, _, names, dirfd in os.fwalk(str(local), follow_symlinks=False):
            rel_top = os.path.relpath(top, str(local))
            for name in names:
                try:
                    if not stat.S_ISREG(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                        continue
                except OSError:  # gone since it was listed
                    continue
                target = snap / name if rel_top == "." else snap / rel_top / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(name, str(target), src_dir_fd=dirfd, follow_symlinks=False)
    except OSError as exc:
        log.info("no snapshot of %s (%s): syncing it in place", local, exc)
        shutil.rmtree(snap, ignore_errors=True)
        return None
    return snap


def open_below(root: Path, rel: str) -> int:
    """A read-only descriptor of the regular file root/rel, opened one path segment at a time with O_NOFOLLOW:
    a link swapped in after `scan` (the job still runs during a checkpoint sync) raises OSError instead of
    being followed. O_NONBLOCK: a FIFO put in a file's place cannot hang the runtime."""
    parts = rel.split("/")
    fd = os.open(str(root), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise OSError(f"{root}/{rel} is not a regular file")
    return file_fd


def link_on_way(root: Path, rel: str) -> str | None:
    """The first existing symbolic link among root/rel's segments below `root` (the file itself included), or
    None: writing there would follow it (a link a job left in the shared data directory, say)."""
    path = root
    for part in [p for p in rel.split("/") if p]:
        path = path / part
        if path.is_symlink():
            return str(path)
    return None


def download_targets(prefix: str, keys: list[str], dest: Path, uri: str) -> list[tuple[str, Path]]:
    """(key, local path) for each object below `prefix` that may be written under `dest`; every other key is
    refused with a line in the run's log naming it: `..`, `.`, empty or absolute segments
    (contract.safe_relative), or a symbolic link already on the way."""
    targets: list[tuple[str, Path]] = []
    for key in keys:
        rel = key[len(prefix):]
        if not rel or rel.endswith("/"):
            continue  # a "directory" marker, not a file
        if safe_relative(rel) is None:
            log.warning("%s: refused the key %r (an empty, '.' or '..' segment, or an absolute path: it would be "
                        "written outside %s)", uri, key, dest)
            continue
        link = link_on_way(dest, rel)
        if link is not None:
            log.warning("%s: refused the key %r (the symbolic link %s is on its way)", uri, key, link)
            continue
        targets.append((key, dest / rel))
    return targets
