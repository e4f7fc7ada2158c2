"""Resolving a validated spec's paths on this disk: the dockerfile and build context, and local input sources."""

from __future__ import annotations

from pathlib import Path

import yaml

from submitter.errors import SpecProblem
from submitter.spec.loader import LoadedSpec, _line
from submitter.spec.models import JobSpec
from submitter.spec.values import DEFAULT_DOCKERFILE


def resolve(path: Path, root: yaml.Node, spec: JobSpec) -> tuple[LoadedSpec, list[SpecProblem]]:
    file = str(path)
    base = path.resolve().parent
    problems: list[SpecProblem] = []
    dockerfile = context = None
    if not spec.image.uri:
        if spec.image.dockerfile:
            dockerfile = (base / spec.image.dockerfile).resolve()
            if not dockerfile.is_file():
                problems.append(SpecProblem(file, _line(root, ["image", "dockerfile"]), "image.dockerfile",
                                            f"no file at {dockerfile}"))
        else:
            dockerfile = _find_upwards(base, DEFAULT_DOCKERFILE)
            if dockerfile is None:
                problems.append(SpecProblem(file, _line(root, ["image"]) if "image" in _keys(root) else None,
                                            "image.dockerfile",
                                            f"no {DEFAULT_DOCKERFILE} next to the spec or in its parent "
                                            "directories; set image.dockerfile or image.uri"))
        if spec.image.context:
            context = (base / spec.image.context).resolve()
            if not context.is_dir():
                problems.append(SpecProblem(file, _line(root, ["image", "context"]), "image.context",
                                            f"no directory at {context}"))
        elif dockerfile is not None:
            context = dockerfile.parent
    local_inputs: dict[str, Path] = {}
    for i, item in enumerate(spec.inputs):
        if not item.target.startswith(spec.volume_mount + "/") and item.target != spec.volume_mount:
            problems.append(SpecProblem(file, _line(root, ["inputs", i, "target"]), f"inputs.{i}.target",
                                        f"{item.target!r} is not under volume_mount {spec.volume_mount!r}; "
                                        "inputs are staged onto the data volume"))
        if not item.source.startswith("s3://"):
            local = (base / item.source).resolve()
            if not local.exists():
                problems.append(SpecProblem(file, _line(root, ["inputs", i, "source"]), f"inputs.{i}.source",
                                            f"no file or directory at {local}"))
            local_inputs[item.source] = local
    return LoadedSpec(path, spec, dockerfile, context, local_inputs), problems


def _keys(node: yaml.Node) -> list[str]:
    return [k.value for k, _ in node.value] if isinstance(node, yaml.MappingNode) else []


def _find_upwards(start: Path, name: str) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None
