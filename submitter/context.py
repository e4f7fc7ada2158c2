"""The build context: which files docker would send (honouring .dockerignore), and the image tag,
a content hash of the Dockerfile, those files and the build args.

Pure: no engine is needed, so a dry run can print the tag.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

PLATFORM = "linux/amd64"
TAG_PREFIX = "c-"
_CHUNK = 1 << 20


def dockerignore_patterns(context: Path) -> list[str]:
    """The patterns of `context/.dockerignore`, as docker reads them (comments and blanks dropped)."""
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def context_files(context: Path, dockerfile: Path) -> list[str]:
    """Relative paths of every regular file and symlink docker would send, sorted.

    Uses the docker SDK's own .dockerignore matcher, so the hash covers exactly what a build sends.
    """
    from docker.utils.build import exclude_paths

    rel_dockerfile = os.path.relpath(dockerfile, context) if _inside(dockerfile, context) else None
    paths = exclude_paths(str(context), dockerignore_patterns(context), rel_dockerfile)
    files = []
    for rel in paths:
        mode = os.lstat(context / rel).st_mode
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            files.append(rel.replace(os.sep, "/"))
    return sorted(files)


def content_tag(dockerfile: Path, context: Path, build_args: Mapping[str, str]) -> str:
    """The image tag: equal inputs give an equal tag; any byte that reaches the build changes it."""
    digest = hashlib.sha256()
    for part in _parts(dockerfile, context, build_args):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return TAG_PREFIX + digest.hexdigest()[:24]


def _parts(dockerfile: Path, context: Path, build_args: Mapping[str, str]) -> Iterator[bytes]:
    yield b"submitter-context-v1"
    yield PLATFORM.encode()
    yield dockerfile.read_bytes()
    for name in sorted(build_args):
        yield f"arg:{name}={build_args[name]}".encode()
    for rel in context_files(context, dockerfile):
        path = context / rel
        info = os.lstat(path)
        executable = bool(info.st_mode & stat.S_IXUSR)
        yield f"file:{rel}:{int(executable)}".encode()
        yield os.readlink(path).encode() if stat.S_ISLNK(info.st_mode) else _file_digest(path)


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
