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
from submitter.spec import yaml_bounded
from submitter.spec.models import JobSpec
from submitter.spec.values import SECRET_NAME, SECRET_VALUE
from submitter.spec.yaml_bounded import MERGE, Mapping


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec plus what it resolved to on this disk."""

    path: Path
    spec: JobSpec
    dockerfile: Path | None  # None when image.uri is given
    context: Path | None
    local_inputs: dict[str, Path] = field(default_factory=dict)  # source as written -> absolute path
    # Fields the run records get on top of the usual ones: a rerun's `reproduces`, `overrides` and the original's
    # `git` (submitter/rerun.py builds such a spec from a run record, without a file).
    record: dict[str, Any] = field(default_factory=dict)


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
    text = yaml_bounded.read_text(path, shown)
    node, problems = yaml_bounded.compose(text, shown)
    if node is None:
        raise SpecError([SpecProblem(shown, None, "",
                                     "the file is empty; a spec needs at least name, command, resources")])
    if not isinstance(node, yaml.MappingNode):
        raise SpecError([SpecProblem(shown, _line(node), "", "expected a mapping of fields (name:, command:, ...)")])
    data, unbuilt = yaml_bounded.construct(node, shown)
    if unbuilt:
        raise SpecError(_reported(problems + unbuilt))
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(shown, node, err, data) for err in exc.errors()]
    if problems:
        raise SpecError(_reported(problems))
    problems += _secret_values(shown, node, spec)
    # Imported here: paths builds on this module's LoadedSpec and line lookup.
    from submitter.spec.paths import resolve

    resolved, more = resolve(path, node, spec)
    problems += more
    if problems:
        raise SpecError(_reported(problems))
    return resolved


def _problem(file: str, root: yaml.Node, err: Any, data: Any) -> SpecProblem:
    loc = _user_loc(err["loc"], data)
    kind = err["type"]
    message = str(err["msg"]).removeprefix("Value error, ")
    got = _clip(repr(err.get("input")))
    if kind == "extra_forbidden" and loc:
        unknown = loc[-1]  # the user's key verbatim: it may hold `[`, `.` or be a number
        model = _model_at(loc[:-1])
        known = list(model.model_fields) if model else []
        hint = [h for h in difflib.get_close_matches(str(unknown), known, n=2, cutoff=0.6) if h != unknown]
        message = f"unknown field {_clip(repr(unknown))}; " + (
            f"did you mean {hint[0]!r}?" if hint else f"expected one of: {', '.join(known)}")
    elif kind == "invalid_key":
        message = f"the key {got} is not a field name: names are text (YAML reads 1, null, true as other types)"
    elif kind == "missing":
        message = "required field is missing"
    elif kind in {"float_parsing", "int_parsing", "float_type", "int_type", "int_from_float"}:
        message = f"expected a number, got {got}"
    elif kind in {"model_type", "model_attributes_type", "dict_type"}:
        message = f"expected a mapping of fields, got {got}"
    elif kind == "list_type":
        message = f"expected a list, got {got}"
    elif kind == "too_short":
        message = "expected at least one item"
    return SpecProblem(file, _line(root, loc), ".".join(yaml_bounded.shown(str(p)) for p in loc),
                       yaml_bounded.shown(message, 400))


def _user_loc(loc: Sequence[Any], data: Any) -> list[Any]:
    """Pydantic's error location without the union members and validators it inserts ("int",
    "literal['auto']", "function-after[...]"): a part is kept when it is a key or index of the user's data, or,
    past the data (a missing field), unless it is one of pydantic's own names."""
    kept: list[Any] = []
    for part in loc:
        inside = isinstance(data, dict) and part in data
        inside = inside or (isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data))
        if inside:
            data = data[part]
        elif isinstance(part, str) and ("[" in part or part.startswith("function-") or part in _PYDANTIC_PARTS):
            continue
        else:
            data = None
        kept.append(part)
    return kept


_PYDANTIC_PARTS = {"int", "float", "str", "bool", "none", "list", "dict", "is-instance", "lax-or-strict"}


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
    """The line of the deepest YAML node that `loc` reaches (1-based): one dict lookup per level on the
    composer's indexed mappings, through aliases (to the anchor's lines) and `<<` merges."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = _field(node, str(part))
            if pair is None:
                return line
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _field(node: yaml.MappingNode, name: str) -> tuple[yaml.Node, yaml.Node] | None:
    fields = node.fields if isinstance(node, Mapping) else {k.value: (k, v) for k, v in reversed(node.value)}
    found = node.find(name) if isinstance(node, Mapping) else fields.get(name)
    if found is not None:
        return found
    merge = fields.get("<<")
    if merge is None or merge[0].tag != MERGE:
        return None
    sources = merge[1].value if isinstance(merge[1], yaml.SequenceNode) else [merge[1]]
    for source in sources:  # depth is bounded by the composer, so this recursion is too
        if isinstance(source, yaml.MappingNode) and (found := _field(source, name)) is not None:
            return found
    return None


MAX_PROBLEMS = 50  # a hostile file can make thousands; the first fifty show what to fix


def _reported(problems: list[SpecProblem]) -> list[SpecProblem]:
    """Each problem once, by line; a hostile file's thousands are cut to the first MAX_PROBLEMS."""
    ordered = sorted(_unique(problems), key=lambda p: p.line or 0)
    if len(ordered) <= MAX_PROBLEMS:
        return ordered
    rest = len(ordered) - MAX_PROBLEMS
    return ordered[:MAX_PROBLEMS] + [SpecProblem(ordered[0].file, None, "", f"... and {rest} more problems")]


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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
