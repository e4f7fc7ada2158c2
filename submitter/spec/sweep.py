"""From one spec to its runs: the submission id and one run per sweep combination."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import datetime

from submitter.spec.models import JobSpec


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
