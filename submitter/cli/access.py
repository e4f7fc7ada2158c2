"""Reaching a running run: `ssh` (a shell or a command) and `notebook` (a server in its container,
forwarded to localhost)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from submitter.cli import ids
from submitter.cli.base import say, settings_of


def ssh(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="RUN id."),
    command: list[str] = typer.Argument(None, help="Command to run instead of a shell (after --)."),
    cidr: str = typer.Option(None, "--cidr", help="Source CIDR for the temporary rule; default your /32."),
) -> None:
    """Open a shell (or run a command) on a run's instance; port 22 opens for your /32 only, then closes."""
    from submitter import connect
    from submitter.access import ssh as ssh_mod

    ids.run(run)
    settings = connect.resolve(settings_of(ctx))
    code = ssh_mod.ssh(connect.aws(settings), settings, run, command or [], cidr, say)
    if code:
        raise typer.Exit(code)


def notebook(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="SPEC file (submitted first) or RUN id."),
    port: int = typer.Option(8888, "--port", help="Port in the job container to forward."),
    local_port: int = typer.Option(None, "--local-port", help="Port on localhost; default the same (or a free one)."),
    command: str = typer.Option(None, "--command", help="Server to start in the container instead of Jupyter, "
                                "e.g. 'tensorboard --logdir /outputs --bind_all --port 6006'."),
    no_start: bool = typer.Option(False, "--no-start", help="Start nothing: forward a port the job already serves."),
    cidr: str = typer.Option(None, "--cidr", help="Source CIDR for the temporary rule; default your /32."),
) -> None:
    """Run Jupyter (or forward any port) in the job container and open it on localhost."""
    from submitter import connect
    from submitter.notebook import open_notebook

    if not Path(target).is_file():  # a spec file is loaded and checked as a spec
        ids.run(target, "SPEC|RUN")
    settings = connect.resolve(settings_of(ctx))

    def ready(nb: Any) -> None:
        typer.echo(f"open {nb.url}")
        sys.stdout.flush()
        say(f"forwarding localhost:{nb.local_port} -> {nb.remote[0]}:{nb.remote[1]} in {nb.run_id}; Ctrl-C to stop")

    open_notebook(connect.aws(settings), settings, target, port, local_port, command, not no_start, cidr, say, ready,
                  os.environ, Path.cwd())
