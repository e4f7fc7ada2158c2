"""The job spec (JOBSPEC.md): pydantic models, YAML loading that keeps line numbers, sweep expansion.

Every problem is reported as file:line: field.path: what was expected, all at once, before anything
is built or created.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from submitter.errors import SpecError, SpecProblem

DEFAULT_DOCKERFILE = "Dockerfile.train"
MAX_RUNS = 1000
_NAME = re.compile(r"^[a-z0-9-]{1,40}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Names that say "I am a credential": their values belong in `secrets`, never in the spec.
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
_SECRET_VALUE = re.compile(r"(AKIA|ASIA)[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|gh[pousr]_[A-Za-z0-9]{30,}")
_SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr", "/var"}


# ---------------------------------------------------------------------------------------------- value types


def _seconds(value: Any, example: str, low: float, high: float, bounds: str) -> float:
    """A duration ('4h', '90m', '1h30m', '45s', '2d') or a number of seconds, within [low, high]."""
    expected = f"expected a duration like {example}"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{expected}, got {value!r}")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"{expected}, got {value!r}")
    if not low <= seconds <= high:
        raise ValueError(f"must be between {bounds}, got {value!r}")
    return seconds


def _duration(value: Any) -> float:
    return _seconds(value, "4h, 90m or 1h30m", 60, 14 * 86400, "1m and 14d")


def _grace(value: Any) -> float:
    """The SIGTERM-to-SIGKILL grace period."""
    return _seconds(value, "90s or 2m", 5, 900, "5s and 15m")


def _scalar_text(value: Any) -> str:
    """An env or build-arg value as the container will see it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(f"expected a string or number, got {type(value).__name__}")


def _text_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of NAME: value")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise ValueError(f"{key!r} is not a valid variable name (letters, digits, _; not starting with a digit)")
        try:
            out[key] = _scalar_text(item)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return out


Duration = Annotated[float, BeforeValidator(_duration)]
Grace = Annotated[float, BeforeValidator(_grace)]
TextMap = Annotated[dict[str, str], BeforeValidator(_text_map)]


def _absolute_dir(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute container path for {what}, like /{what}")
    clean = "/" + value.strip("/")
    if clean in _SYSTEM_DIRS:
        raise ValueError(f"{value!r} is a system directory; use a directory of your own, like /{what}")
    return clean


# ---------------------------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ImageSpec(_Model):
    dockerfile: str | None = None
    context: str | None = None
    build_args: TextMap = Field(default_factory=dict)
    uri: str | None = None

    @model_validator(mode="after")
    def _uri_excludes_build(self) -> ImageSpec:
        if self.uri and (self.dockerfile or self.context or self.build_args):
            raise ValueError("give either uri (a prebuilt image) or dockerfile/context/build_args, not both")
        return self

    @field_validator("uri")
    @classmethod
    def _uri_pinned(cls, value: str | None) -> str | None:
        if value is not None and ("/" not in value or " " in value):
            raise ValueError("expected an image reference like ACCOUNT.dkr.ecr.REGION.amazonaws.com/repo@sha256:...")
        return value


class Resources(_Model):
    instance_types: list[str] = Field(min_length=1)
    max_price: float | None = Field(default=None, gt=0, le=100)
    region: str | None = None
    volume_gb: int = Field(default=30, ge=1, le=16384)
    gpus: Literal["auto"] | int = "auto"
    backend: Literal["pool", "batch"] = "pool"  # pool: our own spot worker group; batch: AWS Batch (docs/batch.md)

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: Any) -> Any:
        if value in ("pool", "batch"):
            return value
        raise ValueError(f"expected pool (a worker pool of your own) or batch (AWS Batch), got {value!r}")

    @field_validator("instance_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        for item in value:
            if not isinstance(item, str) or not _INSTANCE_TYPE.match(item):
                raise ValueError(f"{item!r} is not an EC2 instance type, like g4dn.xlarge")
        if len(set(value)) != len(value):
            raise ValueError("lists an instance type twice")
        return value

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 16):
            return value
        raise ValueError(f"expected 'auto' or a whole number of GPUs from 0 to 16, got {value!r}")

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not _REGION.match(value):
            raise ValueError(f"{value!r} is not an AWS region, like us-east-1")
        return value


class Input(_Model):
    source: str
    target: str

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith("s3://"):
            if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", value):
                raise ValueError(f"{value!r} is not an S3 URI like s3://bucket/prefix/")
        elif "://" in value:
            raise ValueError(f"{value!r}: sources are local paths or s3:// URIs")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"expected an absolute container path under volume_mount, got {value!r}")
        return "/" + value.strip("/")


class Limits(_Model):
    max_runtime: Duration = 8 * 3600.0
    max_cost: float | None = Field(default=None, gt=0)
    stop_grace: Grace = 90.0  # SIGTERM, then SIGKILL after this (spot notice, cancel, limits); a notice may shorten it


class Queue(_Model):
    max_workers: int = Field(default=1, ge=1, le=100)


class Retries(_Model):
    on_interruption: int = Field(default=3, ge=0, le=20)
    on_failure: int = Field(default=0, ge=0, le=10)


class JobSpec(_Model):
    name: str
    image: ImageSpec = Field(default_factory=ImageSpec)
    command: list[str]
    env: TextMap = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    resources: Resources
    volume_mount: str = "/data"
    inputs: list[Input] = Field(default_factory=list)
    outputs: str = "/outputs"
    checkpoints: str | None = None
    limits: Limits = Field(default_factory=Limits)
    sweep: dict[str, list[str]] = Field(default_factory=dict)
    queue: Queue = Field(default_factory=Queue)
    retries: Retries = Field(default_factory=Retries)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _NAME.match(value):
            raise ValueError(f"expected 1 to 40 characters of a-z, 0-9 and '-', got {value!r}")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("expected a command, got an empty string")
            return ["/bin/sh", "-c", value]
        if isinstance(value, list) and value:
            try:
                return [_scalar_text(v) for v in value]
            except ValueError:
                raise ValueError("expected a list of strings (exec form) or one shell string") from None
        raise ValueError("expected a list of strings (exec form), like [python, train.py], or one shell string")

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, dict):
            raise ValueError(
                "lists secret names only, like [WANDB_API_KEY]; values are never written in a spec: "
                "they are read from the environment or .env at submit time"
            )
        if not isinstance(value, list):
            raise ValueError("expected a list of names, like [WANDB_API_KEY]")
        for item in value:
            if not isinstance(item, str) or not _ENV_NAME.match(item):
                raise ValueError(
                    f"{item!r} is not a secret name; list names only (like WANDB_API_KEY) and keep the "
                    "value in the environment or .env"
                )
        return value

    @field_validator("volume_mount", "outputs", "checkpoints", mode="before")
    @classmethod
    def _container_dirs(cls, value: Any, info: Any) -> Any:
        return None if value is None else _absolute_dir(value, info.field_name)

    @field_validator("sweep", mode="before")
    @classmethod
    def _sweep(cls, value: Any) -> dict[str, list[str]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of NAME: [value, ...]")
        out: dict[str, list[str]] = {}
        for key, values in value.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid variable name")
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}: expected a non-empty list of values, like [0.1, 0.01]")
            try:
                texts = [_scalar_text(v) for v in values]
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
            if len(set(texts)) != len(texts):
                raise ValueError(f"{key}: lists a value twice")
            out[key] = texts
        return out

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        clash = sorted(set(self.env) & set(self.sweep))
        if clash:
            raise ValueError(f"{clash[0]} is set in both env and sweep; keep it in one of them")
        dirs = {"volume_mount": self.volume_mount, "outputs": self.outputs}
        if self.checkpoints:
            dirs["checkpoints"] = self.checkpoints
        if len(set(dirs.values())) != len(dirs):
            raise ValueError(f"volume_mount, outputs and checkpoints must be different directories: {dirs}")
        combos = 1
        for values in self.sweep.values():
            combos *= len(values)
        if combos > MAX_RUNS:
            raise ValueError(f"sweep makes {combos} runs; at most {MAX_RUNS} per submission")
        return self


# ---------------------------------------------------------------------------------------------- loading


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
    resolved, more = _resolve_paths(path, node, spec)
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
            if value and (_SECRET_NAME.search(key) or _SECRET_VALUE.search(value)):
                loc = [*section.split("."), key]
                problems.append(SpecProblem(
                    file, _line(root, loc), ".".join(loc),
                    "looks like a secret value; list its name under `secrets:` and keep the value in the "
                    "environment or .env (values in the spec end up in logs and images)",
                ))
    for i, word in enumerate(spec.command):
        if _SECRET_VALUE.search(word):
            problems.append(SpecProblem(file, _line(root, ["command", i]), f"command.{i}",
                                        "contains a credential; pass it through `secrets:` instead"))
    return problems


def _resolve_paths(path: Path, root: yaml.Node, spec: JobSpec) -> tuple[LoadedSpec, list[SpecProblem]]:
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


def _unique(problems: Iterable[SpecProblem]) -> list[SpecProblem]:
    seen: dict[tuple[Any, ...], SpecProblem] = {}
    for p in problems:
        seen.setdefault((p.line, p.field, p.message), p)
    return list(seen.values())


# ---------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    run_id: str
    index: int | None
    sweep: dict[str, str]
    env: dict[str, str]


def submission_id(name: str, now: datetime, token: str) -> str:
    """`<name>-<YYYYmmdd-HHMMSS>-<6 hex>` (JOBSPEC.md)."""
    if not re.fullmatch(r"[0-9a-f]{6}", token):
        raise ValueError("token must be 6 hex digits")
    return f"{name}-{now:%Y%m%d-%H%M%S}-{token}"


def expand(spec: JobSpec, submission: str) -> list[Run]:
    """One run per sweep combination (keys in spec order, last key fastest); a spec without sweep is one run."""
    if not spec.sweep:
        return [Run(submission, None, {}, dict(spec.env))]
    keys = list(spec.sweep)
    runs = []
    for index, values in enumerate(itertools.product(*(spec.sweep[k] for k in keys))):
        combo = dict(zip(keys, values, strict=True))
        runs.append(Run(f"{submission}-{index}", index, combo, {**spec.env, **combo}))
    return runs
