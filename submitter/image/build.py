"""Building the training image with the docker SDK: what the plan asks for, the labels that record where it
came from, and the build stream turned into progress lines or an error naming the failed step."""

from __future__ import annotations

import re
import subprocess
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitter.context import PLATFORM
from submitter.errors import ImageError
from submitter.image.wording import DISK_FULL, disk_full, first_line
from submitter.progress import Progress

STEP_TAIL_LINES = 15
_BUILD_NOISE = (" ---> ", "Removing intermediate", "Successfully")


@dataclass(frozen=True)
class BuildRequest:
    """What the plan says about the image of one job."""

    job: str
    dockerfile: Path
    context: Path
    build_args: Mapping[str, str] = field(default_factory=dict)
    repository: str = "submitter"  # ECR repository name (Settings.ecr_repository)
    tag: str | None = None  # the plan's content tag; computed from the context when None
    uri: str | None = None  # prebuilt image: no build, no push, only an existence check


def build_labels(build: BuildRequest, tag: str) -> dict[str, str]:
    """OCI revision (git commit of the context), whether its work tree is dirty, the job and the tag."""
    labels = {"submitter.job": build.job, "submitter.tag": tag}
    commit = _git(build.context, "rev-parse", "HEAD")
    if commit:
        labels["org.opencontainers.image.revision"] = commit
        # Only the context matters to the image, so only changes under it make the build "dirty".
        changes = _git(build.context, "status", "--porcelain", "--", ".")
        labels["submitter.dirty"] = "true" if changes else "false"
    return labels


def build(api: Any, build: BuildRequest, reference: str, progress: Progress) -> str:
    from docker.errors import APIError

    step = ""
    tail: deque[str] = deque(maxlen=STEP_TAIL_LINES)
    image_id = None
    try:
        stream = api.build(
            path=str(build.context),
            dockerfile=str(build.dockerfile.resolve()),
            tag=reference,
            buildargs=dict(build.build_args),
            labels=build_labels(build, reference.rsplit(":", 1)[1]),
            platform=PLATFORM,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for event in stream:
            if "error" in event or "errorDetail" in event:
                message = (event.get("errorDetail") or {}).get("message") or event.get("error") or ""
                raise build_error(step, message, list(tail))
            if "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
                image_id = event["aux"]["ID"]
            text = event.get("stream") or event.get("status")
            if not text:
                continue
            for line in str(text).splitlines():
                if re.match(r"^Step \d+/\d+ : ", line):
                    step = line
                    tail.clear()
                    progress.step(line)
                elif line.strip() and not line.startswith(_BUILD_NOISE):
                    tail.append(line)
                    progress.step(f"  {line}")
    except APIError as exc:
        raise build_error(step, str(exc.explanation or exc), list(tail)) from exc
    if not image_id:
        image_id = api.inspect_image(reference)["Id"]
    return str(image_id)


def build_error(step: str, message: str, tail: list[str]) -> ImageError:
    if DISK_FULL in message:
        return disk_full("docker build", message)
    what = f"{step or 'before the first step'} failed: {first_line(message)}"
    if tail:
        what += "\n  last output:\n" + "\n".join(f"    {line}" for line in tail)
    return ImageError("docker build", what, "fix that Dockerfile step (or files it uses) and submit again")


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
