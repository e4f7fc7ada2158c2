"""The root of the command line: global flags anywhere on the line, the one handler that renders our errors
and maps them to exit codes, the settings every command starts from, and the entry points."""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from submitter import settings as settings_mod
from submitter.errors import SubmitterError
from submitter.settings import Settings

GLOBAL_FLAGS = ("--sandbox", "--debug")


class _Group(TyperGroup):
    """Root group: global flags anywhere on the line, and the one handler that renders our errors."""

    # typer vendors click privately; its Context type has no public name, hence `Any` in the overrides.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if ctx.parent is None:
            cut = args.index("--") if "--" in args else len(args)
            head, tail = args[:cut], args[cut:]
            flags = [a for a in head if a in GLOBAL_FLAGS]
            args = flags + [a for a in head if a not in GLOBAL_FLAGS] + tail
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SubmitterError as err:
            if _debug(ctx):
                traceback.print_exc()
            typer.echo(f"error: {err.render()}", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


def _debug(ctx: Any) -> bool:
    obj = ctx.obj
    return bool(ctx.params.get("debug")) or (isinstance(obj, Settings) and obj.debug)


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=True,  # `--install-completion` / `--show-completion`: bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Run training jobs on the cheapest suitable AWS spot capacity; leave results in S3 and nothing billing.",
)
sandbox_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="A local AWS on loopback (moto, a real registry, an instance runner) to rehearse jobs with no account.",
)
app.add_typer(sandbox_app, name="sandbox")


@app.callback()
def _root(
    ctx: typer.Context,
    sandbox: bool = typer.Option(False, "--sandbox", help="Use the local sandbox instead of AWS."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    settings = settings_mod.load(os.environ, Path.cwd())
    if sandbox:
        settings = settings.with_sandbox()
    if debug:
        from dataclasses import replace

        settings = replace(settings, debug=True)
    ctx.obj = settings


def settings_of(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def print_json(value: Any) -> None:
    """`value` as strict JSON (RFC 8259: no NaN or Infinity, which JSON parsers refuse), or a clear error naming
    where the value that JSON cannot carry is; nothing is printed then."""
    try:
        text = json.dumps(value, indent=2, default=str, allow_nan=False)
    except ValueError:
        where = _non_finite(value) or "the output"
        raise SubmitterError("--json", f"{where} is not a finite number, which JSON cannot carry",
                             "run the command without --json to see it; a price or cost this large points at "
                             "a bad value in a status document or a spec") from None
    sys.stdout.write(text + "\n")


def _non_finite(value: Any, path: str = "") -> str | None:
    """The path (`runs[0].cost`) of the first NaN or infinite float in `value`."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path or 'the value'} ({value})"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def say(text: str) -> None:
    """Progress and notes go to stderr, so stdout stays the command's result."""
    typer.echo(text, err=True)


def submit_main() -> None:
    """The `submit` console script: the same as `submitter submit`."""
    main(["submit", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point."""
    command = typer.main.get_command(app)
    command.main(args=argv if argv is not None else sys.argv[1:], prog_name="submitter")
    raise SystemExit(0)
