"""The job spec's pydantic models (JOBSPEC.md): every field, its default and what it accepts."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from submitter.spec.values import (
    ARM64_FAMILY,
    ENV_NAME,
    INSTANCE_TYPE,
    MAX_RUNS,
    NAME,
    REGION,
    Duration,
    Grace,
    KeepWindow,
    TextMap,
    container_dir,
    finite,
    host_path,
    image_reference,
    scalar_text,
)


class _Model(BaseModel):
    # allow_inf_nan=False: a float field that none of the validators below names still refuses .inf and .nan.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)


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
    def _uri_reference(cls, value: str | None) -> str | None:
        return None if value is None else image_reference(value)

    @field_validator("dockerfile", "context", mode="before")
    @classmethod
    def _host_paths(cls, value: Any) -> Any:
        return host_path(value)


class Resources(_Model):
    instance_types: list[str] = Field(min_length=1)
    max_price: float | None = Field(default=None, gt=0, le=100)
    region: str | None = None
    volume_gb: int = Field(default=30, ge=1, le=16384)
    gpus: Literal["auto"] | int = "auto"
    backend: Literal["pool", "batch"] = "pool"  # pool: our own spot worker group; batch: AWS Batch (docs/batch.md)

    @field_validator("max_price", mode="before")
    @classmethod
    def _finite_price(cls, value: Any) -> Any:
        return finite(value)

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
            if not isinstance(item, str) or not INSTANCE_TYPE.match(item):
                raise ValueError(f"{item!r} is not an EC2 instance type, like g4dn.xlarge")
            if ARM64_FAMILY.match(item.split(".")[0]):
                # The image is built for this machine's x86_64 and the plan launches the x86_64 AMI: an arm64
                # host could not run either (docs/decisions.md, "Instance AMI").
                raise ValueError(f"{item} is an arm64 (Graviton) type; submitter runs x86_64 images on x86_64 "
                                 "AMIs: use an x86_64 type instead, like c6i.large or g5.xlarge")
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
        if value is not None and not REGION.match(value):
            raise ValueError(f"{value!r} is not an AWS region, like us-east-1")
        return value


class Input(_Model):
    source: str
    target: str

    @field_validator("source", mode="before")
    @classmethod
    def _plain_source(cls, value: Any) -> Any:
        return host_path(value)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith("s3://"):
            if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", value):
                raise ValueError(f"{value!r} is not an S3 URI like s3://bucket/prefix/")
        elif "://" in value:
            raise ValueError(f"{value!r}: sources are local paths or s3:// URIs")
        return value

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> str:
        return container_dir(value, "/data/train (under volume_mount)")


MAX_PERMISSION_PREFIXES = 20  # per list: a job's role policy stays far below IAM's 10 KB inline limit
# No `*`/`?` (wildcards) and no `$` (`${*}` is IAM's escape for a literal wildcard) in a job role's prefixes.
S3_PREFIX = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^*?$\s]*)?$")


class Permissions(_Model):
    """What the job container may reach in AWS, as a per-submission job role (nothing when absent)."""

    s3_read: list[str] = Field(default_factory=list)
    s3_write: list[str] = Field(default_factory=list)

    @field_validator("s3_read", "s3_write", mode="before")
    @classmethod
    def _prefixes(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("expected a list of S3 URIs, like [\"s3://my-datasets/imagenet/\"]")
        if len(value) > MAX_PERMISSION_PREFIXES:
            raise ValueError(f"lists {len(value)} prefixes; at most {MAX_PERMISSION_PREFIXES}")
        for item in value:
            # Wildcards and policy variables would widen the role beyond what the spec shows; `..` has no
            # meaning in a key prefix.
            if not isinstance(item, str) or not S3_PREFIX.match(item) or "/../" in item + "/":
                raise ValueError(f"{item!r} is not an S3 URI like s3://bucket/prefix/ (no wildcards)")
        if len(set(value)) != len(value):
            raise ValueError("lists a prefix twice")
        return value


class Limits(_Model):
    max_runtime: Duration = 8 * 3600.0
    max_cost: float | None = Field(default=None, gt=0)
    stop_grace: Grace = 90.0  # SIGTERM, then SIGKILL after this (spot notice, cancel, limits); a notice may shorten it
    # A failed run's instance, volume and stopped container stay this long for `submitter ssh` (pool backend only;
    # docs/keep.md); the window counts against max_cost and max_runtime.
    keep_on_failure: KeepWindow = 0.0
    checkpoint_warn_after: Duration = 30 * 60.0  # with `checkpoints`: the run's status warns after this without one

    @field_validator("max_cost", mode="before")
    @classmethod
    def _finite_cost(cls, value: Any) -> Any:
        return finite(value)


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
    outputs: str = Field(default="/outputs", validate_default=True)  # checked against volume_mount too
    checkpoints: str | None = None
    limits: Limits = Field(default_factory=Limits)
    sweep: dict[str, list[str]] = Field(default_factory=dict)
    queue: Queue = Field(default_factory=Queue)
    retries: Retries = Field(default_factory=Retries)
    permissions: Permissions = Field(default_factory=Permissions)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if not isinstance(value, str) or not NAME.match(value):
            raise ValueError(f"expected 1 to 40 characters of a-z, 0-9 and '-', starting with a letter or digit, "
                             f"got {value!r}")
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
                return [scalar_text(v) for v in value]
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
            if not isinstance(item, str) or not ENV_NAME.match(item):
                raise ValueError(
                    f"{item!r} is not a secret name; list names only (like WANDB_API_KEY) and keep the "
                    "value in the environment or .env"
                )
        return value

    @field_validator("volume_mount", "outputs", "checkpoints", mode="before")
    @classmethod
    def _container_dirs(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        here = container_dir(value, "/data" if info.field_name == "volume_mount" else f"/{info.field_name}")
        # On a pool worker each of the three is a mount of its own, and one inside another hides what is below
        # it (an input staged to /data/out vanishes under an outputs mount there); under AWS Batch they are plain
        # directories, so outputs would also upload the checkpoints. Either way the run would not do what it says.
        for other in ("volume_mount", "outputs"):
            there = info.data.get(other) if other != info.field_name else None
            if there is None:
                continue
            if here == there:
                clash = f"is the same directory as {other}"
            elif here.startswith(there + "/") or there.startswith(here + "/"):
                clash = f"{here} and {other} {there} lie inside one another"
            else:
                continue
            raise ValueError(f"{clash}; volume_mount, outputs and checkpoints need separate directories, like "
                             "/data, /outputs and /checkpoints")
        return here

    @field_validator("sweep", mode="before")
    @classmethod
    def _sweep(cls, value: Any) -> dict[str, list[str]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of NAME: [value, ...]")
        out: dict[str, list[str]] = {}
        for key, values in value.items():
            if not isinstance(key, str) or not ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid variable name")
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}: expected a non-empty list of values, like [0.1, 0.01]")
            try:
                texts = [scalar_text(v) for v in values]
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
        if self.run_count > MAX_RUNS:
            raise ValueError(f"sweep makes {self.run_count} runs; at most {MAX_RUNS} per submission")
        return self

    @property
    def run_count(self) -> int:
        """How many runs the spec makes: the product of its sweep's value counts (1 without a sweep)."""
        return math.prod(len(values) for values in self.sweep.values())
