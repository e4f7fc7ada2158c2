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

from submitter.errors import UsageError

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


# Names that nearly always hold a credential. The whole context goes to the engine, and a `COPY . .` bakes it
# into a layer that anyone who can pull the image reads (the job's own container included), so such a file is
# sent only when the user has decided about it in .dockerignore (then it is not sent at all).
SECRET_NAMES = frozenset({".env", ".netrc", "_netrc", ".pgpass", ".pypirc", ".git-credentials"})
SECRET_KEY_FILES = ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519")  # private ssh keys; their .pub is public
SECRET_SUFFIXES = (".pem", ".key", ".p12", ".pfx")
SECRET_PATHS = (".aws/credentials", ".docker/config.json", ".ssh/config")
ENV_TEMPLATES = frozenset({".env.example", ".env.sample", ".env.template", ".env.dist"})  # committed, no values


def looks_secret(rel: str) -> bool:
    """Whether the context file `rel` (a /-separated path) is named like a credential."""
    name = rel.rsplit("/", 1)[-1].lower()
    if name in ENV_TEMPLATES:
        return False
    if name in SECRET_NAMES or name.startswith(".env."):
        return True
    if name.startswith(SECRET_KEY_FILES) and not name.endswith(".pub"):
        return True
    if name.endswith(SECRET_SUFFIXES):
        return True
    lowered = rel.lower()
    return any(lowered == p or lowered.endswith("/" + p) for p in SECRET_PATHS)


def refuse_secret_files(context: Path, dockerfile: Path) -> None:
    """A UsageError naming every secret-looking file the build would send; nothing when there is none."""
    found = [rel for rel in context_files(context, dockerfile) if looks_secret(rel)]
    if not found:
        return
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    raise UsageError(
        f"build context {context}",
        f"{shown} {'looks' if len(found) == 1 else 'look'} like a secret and would be sent to the docker build "
        "(a COPY puts it in the image, readable by anyone who can pull it)",
        f"add {found[0]} to {context / '.dockerignore'} (or move it out of the context), then submit again",
    )


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
