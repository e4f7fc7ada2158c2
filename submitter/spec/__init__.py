"""The job spec (JOBSPEC.md): models, YAML loading that keeps line numbers, sweep expansion.

Import from here: `from submitter.spec import load, JobSpec, expand`.
"""

from submitter.spec.loader import LoadedSpec, load, load_many
from submitter.spec.models import ImageSpec, Input, JobSpec, Limits, Queue, Resources, Retries
from submitter.spec.sweep import Run, expand, submission_id
from submitter.spec.values import DEFAULT_DOCKERFILE, MAX_RUNS

__all__ = [
    "DEFAULT_DOCKERFILE", "MAX_RUNS", "ImageSpec", "Input", "JobSpec", "Limits", "LoadedSpec", "Queue", "Resources",
    "Retries", "Run", "expand", "load", "load_many", "submission_id",
]
