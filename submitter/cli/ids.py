"""Run, submission and job ids given on the command line, checked where they are parsed: before any AWS call, a
value that cannot be one (a path, an option, spaces, control characters, far too long) is a UsageError naming
the argument. The shapes are the contract's (contract.submission_of); a job name is the spec's `name`."""

from __future__ import annotations

import re

from submitter import contract
from submitter.errors import UsageError

MAX_CHARS = 128  # far above the longest id (a 40-character job name, its time and token, a 9-digit index)
# spec/values.py NAME, starting with a letter or digit (JOBSPEC.md); spelled here so the CLI imports no pydantic.
JOB_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")


def run(value: str, argument: str = "RUN") -> str:
    """A run id (a submission of one run is its own run id)."""
    _plain(value, argument, "a run id")
    if contract.submission_of(value) is None:
        raise UsageError(argument, f"{_shown(value)} is not a run id, so there is no such run",
                         "give a run id like exp1-20261126-070000-abc123-0; list them with `submitter status --all`")
    return value


def run_or_submission(value: str, argument: str = "RUN|SUBMISSION") -> str:
    _plain(value, argument, "a run or submission id")
    if contract.submission_of(value) is None:
        raise UsageError(argument, f"{_shown(value)} is not a run or submission id",
                         "give an id like exp1-20261126-070000-abc123 (a submission) or ...-abc123-0 (a run); "
                         "list them with `submitter status --all`")
    return value


def submission(value: str, argument: str = "--id") -> str:
    _plain(value, argument, "a submission id")
    if contract.submission_of(value) != value:
        raise UsageError(argument, f"{_shown(value)} is not a submission id",
                         "give the id an earlier submit printed, like exp1-20261126-070000-abc123 (no run index)")
    return value


def target(value: str, argument: str = "RUN|SUBMISSION|JOB") -> str:
    """A run id, a submission id, or a job name (its latest submission)."""
    _plain(value, argument, "a run, submission or job")
    if contract.submission_of(value) is None and not JOB_NAME.fullmatch(value):
        raise UsageError(argument, f"{_shown(value)} is not a run id, a submission id or a job name",
                         "give a job name (a-z, 0-9 and '-', starting with a letter or digit) or an id from "
                         "`submitter status --all`")
    return value


def instance(value: str, argument: str = "INSTANCE_ID") -> str:
    """An EC2 instance id, `i-` and 8 or 17 hex digits (the sandbox's instances have AWS's shape)."""
    if not INSTANCE_ID.fullmatch(value):
        raise UsageError(argument, f"{_shown(value)} is not an EC2 instance id",
                         "give an id like i-0123456789abcdef0; `submitter sandbox status` lists them")
    return value


def _plain(value: str, argument: str, what: str) -> None:
    """What no id contains: refused with the reason, before the shape is checked."""
    reason = None
    if len(value) > MAX_CHARS:
        reason = f"is {len(value)} characters long; {what} has at most {MAX_CHARS}"
    elif not value:
        reason = "is empty"
    elif any(ch.isspace() or not ch.isprintable() for ch in value):
        reason = "contains spaces or control characters"
    elif value.startswith("-"):
        reason = "starts with '-'"
    elif "/" in value or "\\" in value or ".." in value:
        reason = "is a path"
    if reason:
        raise UsageError(argument, f"{_shown(value)} {reason}: not {what}",
                         "give an id from `submitter status --all` (or a job name), exactly as printed")


def _shown(value: str) -> str:
    """The value as it can be printed safely: quoted, escaped, cut short."""
    return repr(value[:60] + ("..." if len(value) > 60 else ""))
