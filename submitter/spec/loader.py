"""Loading a job spec: bounded YAML that keeps line numbers, validation, and every problem reported at once as
file:line: field.path: what was expected, before anything is built or created."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from submitter.errors import SpecError, SpecProblem
from submitter.spec.models import JobSpec
from submitter.spec.values import SECRET_NAME, SECRET_VALUE


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec plus what it resolved to on this disk."""

    path: Path
    spec: JobSpec
    dockerfile: Path | None  # None when image.uri is given
    context: Path | None
    local_inputs: dict[str, Path] = field(default_factory=dict)  # source as written -> absolute path


def load_many(paths: Sequence[Path]) -> list[LoadedSpec]:
    """Load and check every file; report the problems of all of them together."""
    problems: list[SpecProblem] = []
    loaded: list[LoadedSpec] = []
    for path in paths:
        try:
            loaded.append(load(path))
        except SpecError as err:
            problems.extend(err.problems)
    if problems:
        raise SpecError(problems)
    names = [item.spec.name for item in loaded]
    for name in {n for n in names if names.count(n) > 1}:
        dupes = [str(i.path) for i in loaded if i.spec.name == name]
        raise SpecError([SpecProblem(dupes[1], None, "name", f"{name!r} is also the name of {dupes[0]}")])
    return loaded


def load(path: Path) -> LoadedSpec:
    shown = str(path)
    if not path.is_file():
        raise SpecError([SpecProblem(shown, None, "", "no such file")])
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError([SpecProblem(shown, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if node is None:
        raise SpecError([SpecProblem(shown, None, "",
                                     "the file is empty; a spec needs at least name, command, resources")])
    if not isinstance(node, yaml.MappingNode):
        raise SpecError([SpecProblem(shown, _line(node), "", "expected a mapping of fields (name:, command:, ...)")])
    problems = _duplicate_keys(shown, node)
    data = yaml.SafeLoader(text).get_single_data()
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(shown, node, err) for err in exc.errors()]
    if problems:
        raise SpecError(sorted(_unique(problems), key=lambda p: p.line or 0))
    problems += _secret_values(shown, node, spec)
    # Imported here: paths builds on this module's LoadedSpec and line lookup.
    from submitter.spec.paths import resolve

    resolved, more = resolve(path, node, spec)
    problems += more
    if problems:
        raise SpecError(problems)
    return resolved


def _problem(file: str, root: yaml.Node, err: Any) -> SpecProblem:
    loc = [part for part in err["loc"] if not (isinstance(part, str) and ("[" in part or part == "function-after"))]
    kind = err["type"]
    message = str(err["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        unknown = str(loc[-1])
        model = _model_at(loc[:-1])
        known = list(model.model_fields) if model else []
        hint = difflib.get_close_matches(unknown, known, n=1, cutoff=0.6)
        message = f"unknown field {unknown!r}; " + (
            f"did you mean {hint[0]!r}?" if hint else f"expected one of: {', '.join(known)}")
    elif kind == "missing":
        message = "required field is missing"
    elif kind in {"float_parsing", "int_parsing", "float_type", "int_type", "int_from_float"}:
        message = f"expected a number, got {err.get('input')!r}"
    elif kind in {"model_type", "model_attributes_type", "dict_type"}:
        message = f"expected a mapping of fields, got {err.get('input')!r}"
    elif kind == "list_type":
        message = f"expected a list, got {err.get('input')!r}"
    elif kind == "too_short":
        message = "expected at least one item"
    return SpecProblem(file, _line(root, loc), ".".join(str(p) for p in loc), message)


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] = JobSpec
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        inner = getattr(annotation, "__args__", (annotation,))
        candidates = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return None
        model = candidates[0]
    return model


def _line(node: yaml.Node | None, loc: Sequence[Any] = ()) -> int | None:
    """The line of the deepest YAML node that `loc` reaches (1-based)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(file: str, node: yaml.Node, path: str = "") -> list[SpecProblem]:
    problems = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = f"{path}.{key.value}" if path else str(key.value)
            if key.value in seen:
                problems.append(SpecProblem(file, key.start_mark.line + 1, name, "is given twice; keep one"))
            seen.add(key.value)
            problems += _duplicate_keys(file, value, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(file, item, f"{path}.{i}")
    return problems


def _secret_values(file: str, root: yaml.Node, spec: JobSpec) -> list[SpecProblem]:
    problems = []
    for section, mapping in (("env", spec.env), ("image.build_args", spec.image.build_args)):
        for key, value in mapping.items():
            if value and (SECRET_NAME.search(key) or SECRET_VALUE.search(value)):
                loc = [*section.split("."), key]
                problems.append(SpecProblem(
                    file, _line(root, loc), ".".join(loc),
                    "looks like a secret value; list its name under `secrets:` and keep the value in the "
                    "environment or .env (values in the spec end up in logs and images)",
                ))
    for i, word in enumerate(spec.command):
        if SECRET_VALUE.search(word):
            problems.append(SpecProblem(file, _line(root, ["command", i]), f"command.{i}",
                                        "contains a credential; pass it through `secrets:` instead"))
    return problems


def _unique(problems: Iterable[SpecProblem]) -> list[SpecProblem]:
    seen: dict[tuple[Any, ...], SpecProblem] = {}
    for p in problems:
        seen.setdefault((p.line, p.field, p.message), p)
    return list(seen.values())
