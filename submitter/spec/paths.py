"""Resolving a validated spec's paths on this disk: the dockerfile and build context, and local input sources,
each kept inside what the spec may reach (its project directory) before anything is built or uploaded."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import yaml

from submitter.errors import SpecProblem
from submitter.spec.loader import LoadedSpec, _line
from submitter.spec.models import JobSpec
from submitter.spec.values import DEFAULT_DOCKERFILE, SYSTEM_TREES

# Host directories a build context may never be: the kernel's views and the system's programs and
# configuration. A context is sent whole to the docker engine, and these hold nothing of a project.
_HOST_SYSTEM_TREES = ("/proc", "/sys", "/dev", "/etc", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Refused as themselves only: CI work trees live below some of them (/var/lib/jenkins/...).
_HOST_SYSTEM_DIRS = frozenset(SYSTEM_TREES)


def resolve(path: Path, root: yaml.Node, spec: JobSpec) -> tuple[LoadedSpec, list[SpecProblem]]:
    file = str(path)
    base = path.resolve().parent
    problems: list[SpecProblem] = []

    def problem(loc: list[str | int], message: str) -> None:
        problems.append(SpecProblem(file, _line(root, loc), ".".join(str(p) for p in loc), message))

    dockerfile = context = None
    if not spec.image.uri:
        try:
            dockerfile, context = _build(base, spec, problem)
        except OSError as exc:  # a name too long, a directory that cannot be searched...
            problem(["image"], f"{exc.filename}: {exc.strerror}; fix image.dockerfile / image.context")
    if spec.image.uri is None and not spec.image.dockerfile and dockerfile is None and not problems:
        problems.append(SpecProblem(file, _line(root, ["image"]) if "image" in _keys(root) else None,
                                    "image.dockerfile",
                                    f"no {DEFAULT_DOCKERFILE} next to the spec or in its parent "
                                    "directories; set image.dockerfile or image.uri"))
    project = project_dir(base, context)
    local_inputs: dict[str, Path] = {}
    for i, item in enumerate(spec.inputs):
        if not item.target.startswith(spec.volume_mount + "/") and item.target != spec.volume_mount:
            problem(["inputs", i, "target"], f"{item.target!r} is not under volume_mount {spec.volume_mount!r}; "
                                             "inputs are staged onto the data volume")
        if not item.source.startswith("s3://"):
            local = _real(base / item.source)
            try:
                wrong = (_wrong_source(base, item.source, local, project) if local is not None
                         else f"{base / item.source} is a loop of symbolic links")
            except OSError as exc:
                wrong = f"{exc.filename}: {exc.strerror}; give a file or directory that can be read"
            if wrong:
                problem(["inputs", i, "source"], wrong)
            local_inputs[item.source] = local or base / item.source
    return LoadedSpec(path, spec, dockerfile, context, local_inputs), problems


def _build(base: Path, spec: JobSpec, problem: Callable[[list[str | int], str], None]) -> tuple[Path | None,
                                                                                                Path | None]:
    """The Dockerfile and build context a spec names (or the default found above it), each problem reported."""
    dockerfile = context = None
    if spec.image.dockerfile:
        dockerfile = _real(base / spec.image.dockerfile)
        if dockerfile is None:
            problem(["image", "dockerfile"], f"{base / spec.image.dockerfile} is a loop of symbolic links")
        elif not dockerfile.is_file():
            problem(["image", "dockerfile"], f"no file at {dockerfile}")
    else:
        dockerfile = _find_upwards(base, DEFAULT_DOCKERFILE)
    if spec.image.context:
        context = _real(base / spec.image.context)
        if context is None:
            problem(["image", "context"], f"{base / spec.image.context} is a loop of symbolic links")
        elif not context.is_dir():
            problem(["image", "context"], f"no directory at {context}")
    elif dockerfile is not None:
        context = dockerfile.parent
    if context is not None:
        wrong = _wrong_context(context)
        if wrong and not spec.image.context:
            problem(["image", "dockerfile"], f"{wrong} (without image.context, the Dockerfile's directory)")
        elif wrong:
            problem(["image", "context"], wrong)
        elif dockerfile is not None and dockerfile.is_file() and not dockerfile.is_relative_to(context):
            problem(["image", "dockerfile"],
                    f"{dockerfile} is outside the build context {context}; a build sends the engine the "
                    "context and nothing else from your disk, so keep the Dockerfile inside it (move it, or set "
                    "image.context to a directory that holds both)")
    return dockerfile, context


def project_dir(spec_dir: Path, context: Path | None) -> Path:
    """What a spec's local inputs may come from: the top of the git work tree holding the spec; without one,
    the build context when it holds the spec, else the spec's own directory.

    Found by looking for `.git` upwards (a directory, or the file of a worktree or submodule) without running
    git. A `.git` at / or in the home directory (a dotfiles repository) is no project: it would admit everything.
    """
    home = _home()
    for directory in (spec_dir, *spec_dir.parents):
        if os.path.lexists(directory / ".git") and directory != Path("/") and directory != home:
            return directory
    if context is not None and spec_dir.is_relative_to(context) and _wrong_context(context) is None:
        return context
    return spec_dir


def _wrong_context(context: Path) -> str | None:
    """Why `context` (resolved) cannot be a build context; None when it can."""
    home = _home()
    if context == Path("/"):
        return ("the build context is / , the whole filesystem; docker would be sent all of it. Set "
                "image.context to the project's directory")
    if home is not None and home.is_relative_to(context):
        what = "your home directory" if context == home else f"a directory holding your home directory {home}"
        return (f"the build context {context} is {what}; docker would be sent all of it (keys and credentials "
                "included). Set image.context to the project's directory")
    if str(context) in _HOST_SYSTEM_DIRS or any(context.is_relative_to(top) for top in _HOST_SYSTEM_TREES):
        return (f"the build context {context} is a system directory; docker would be sent the system's files. "
                "Set image.context to the project's directory")
    return None


def _wrong_source(base: Path, written: str, local: Path, project: Path) -> str | None:
    """Why the local input `written` (relative to `base`, resolving to `local`) cannot be staged; None if it can."""
    link = _link_out(base, written, project)
    if link is not None:
        return (f"{link} is a symbolic link to {_real(link)}, outside the project directory {project}; "
                "inputs are uploaded from the project only. Copy the data into it, or upload it to S3 and give "
                "the s3:// URI")
    if not local.is_relative_to(project):
        return (f"{local} is outside the project directory {project} (the git work tree holding the spec, else "
                "its build context or directory); inputs are uploaded from the project only. Move the data "
                "into it, or upload it to S3 and give the s3:// URI")
    try:
        mode = local.stat().st_mode
    except OSError:
        return f"no file or directory at {local}"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return f"{local} is {_kind(mode)}, not a file or directory; give a file or directory of data"
    if stat.S_ISDIR(mode):
        return _wrong_entry(local, project)
    return None


def _link_out(base: Path, written: str, project: Path) -> Path | None:
    """The first component of `written`, walked from `base`, that is a symbolic link leading out of `project`."""
    here = base
    for part in Path(written).parts:
        here = (here / part) if part != ".." else here.parent
        if here.is_symlink():
            target = _real(here)
            if target is None or not target.is_relative_to(project):
                return here
            here = target
    return None


def _wrong_entry(top: Path, project: Path) -> str | None:
    """What in the input directory `top` would be uploaded from outside the project, or would hang or fail the
    upload (a fifo, device or socket); None when nothing. Staging reads every file below it, links followed."""
    for directory, subdirs, names in os.walk(top):
        for name in (*names, *subdirs):
            entry = Path(directory) / name
            try:
                mode = entry.lstat().st_mode
                if stat.S_ISLNK(mode):
                    target = _real(entry)
                    if target is None or not target.is_relative_to(project):
                        return (f"{entry} (in this input) is a symbolic link to {target or 'itself'}, outside the "
                                f"project directory {project}; remove the link or copy what it points to into "
                                "the project")
                    mode = target.stat().st_mode
            except OSError:
                return f"{entry} (in this input) is a broken symbolic link or cannot be read; remove or fix it"
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                return f"{entry} (in this input) is {_kind(mode)}; remove it from the input directory"
    return None


def _real(path: Path) -> Path | None:
    """`path` with every symbolic link resolved; None for a loop of links (Path.resolve raises on one)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (fifo)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (KeyError, RuntimeError):  # no HOME and no passwd entry: nothing to protect by name
        return None


def _keys(node: yaml.Node) -> list[str]:
    return [k.value for k, _ in node.value] if isinstance(node, yaml.MappingNode) else []


def _find_upwards(start: Path, name: str) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None
