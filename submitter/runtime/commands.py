"""Running a command on the instance: output to files (never pipes), a timeout, and a result that says why it
failed in one line."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    code: int
    out: str
    err: str

    def last_line(self) -> str:
        lines = [line.strip() for line in (self.err or self.out).strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self.code}"


class CommandError(Exception):
    def __init__(self, what: str, result: Result) -> None:
        super().__init__(f"{what}: {result.last_line()}")
        self.result = result


def run(args: list[str], input: bytes | None = None, timeout: float | None = 300) -> Result:  # noqa: A002
    env = dict(os.environ, AWS_PAGER="")  # CLI v2 would otherwise page long answers
    # Output goes to files, not pipes: a command that leaves a child holding its stdout (`shutdown -h +N`
    # schedulers do) would otherwise keep us waiting for an end-of-file until the timeout.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(args, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                                  stdout=out, stderr=err, timeout=timeout, env=env, check=False)
        except FileNotFoundError:
            return Result(127, "", f"{args[0]}: command not found")
        except subprocess.TimeoutExpired:
            return Result(124, "", f"{' '.join(args[:3])} timed out after {timeout} s")
        out.seek(0)
        err.seek(0)
        return Result(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def not_found(result: Result) -> bool:
    return any(s in result.err for s in ("404", "Not Found", "NoSuchKey", "does not exist"))


def parse_json(text: str) -> dict[str, Any]:
    """An aws CLI JSON answer; some commands print nothing at all for an empty result."""
    text = text.strip()
    return json.loads(text) if text else {}
