"""Every error submitter reports to a user: where it failed, what happened, what to do next.

One top-level handler (cli.py) renders these and maps them to exit codes; nothing else prints errors.
"""

from __future__ import annotations

from dataclasses import dataclass


class SubmitterError(Exception):
    """Base: a message with three parts and an exit code."""

    exit_code = 1

    def __init__(self, where: str, what: str, next_step: str | None = None) -> None:
        self.where = where
        self.what = what
        self.next_step = next_step
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.what}"
        if self.next_step:
            text += f"\n  next: {self.next_step}"
        return text


class UsageError(SubmitterError):
    """Bad command-line input or settings (exit 2, before anything is created)."""

    exit_code = 2


class SettingsError(UsageError):
    """A setting from the environment or .env is missing or malformed."""


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong in a job spec, located down to the line and the field path."""

    file: str
    line: int | None
    field: str
    message: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class SpecError(UsageError):
    """A job spec does not validate. Carries every problem found, so one edit fixes them all."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__(
            problems[0].file if problems else "job spec",
            "invalid job spec",
            "fix the fields above; the reference is README.md, section 'Job spec'",
        )

    def render(self) -> str:
        return "\n".join([p.render() for p in self.problems] + [f"  next: {self.next_step}"])


class AwsError(SubmitterError):
    """An AWS call failed. Built by the adapters in submitter.aws from a botocore ClientError."""

    def __init__(self, service: str, operation: str, code: str, message: str, next_step: str | None = None):
        self.service = service
        self.operation = operation
        self.code = code
        super().__init__(f"AWS {service} {operation}", f"{code}: {message}", next_step)


class CredentialsError(SubmitterError):
    """No usable AWS credentials or region."""


class CapacityError(SubmitterError):
    """No spot offer satisfies the spec (type, region, max_price)."""

    exit_code = 2


class ImageError(SubmitterError):
    """The training image could not be built, found, or pushed."""


class SandboxError(SubmitterError):
    """The local sandbox could not be started, reached, or torn down."""


class RemoteError(SubmitterError):
    """An SSH or port-forwarding step failed."""
