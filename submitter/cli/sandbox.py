"""`submitter sandbox up|down|status|env|logs|interrupt|interrupt-rate`: the local AWS (docs/sandbox.md)."""

from __future__ import annotations

import math
import sys

import typer

from submitter.cli import ids
from submitter.cli.base import print_json, say, settings_of


def up(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Start the sandbox (idempotent); returns when it is ready."""
    from submitter.sandbox import api

    state = api.up(settings_of(ctx), say)
    if as_json:
        print_json(state)
    else:
        typer.echo(f"sandbox ready: {state['endpoint_url']} (registry {state['registry']})")
        typer.echo("inspect it with: eval \"$(submitter sandbox env)\"; aws ec2 describe-instances")


def down(ctx: typer.Context) -> None:
    """Stop the sandbox: no process, container, loop device or mount is left behind."""
    from submitter.sandbox import api

    api.down(settings_of(ctx), say)
    typer.echo("sandbox down")


def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Whether the sandbox runs, its endpoints, and its instances."""
    from submitter.sandbox import api

    state = api.status(settings_of(ctx))
    if as_json:
        print_json(state)
        return
    typer.echo(f"sandbox: {'up' if state.get('up') else 'down'}")
    for key in ("endpoint_url", "registry", "region"):
        if state.get(key):
            typer.echo(f"  {key}: {state[key]}")
    for inst in state.get("instances", []):
        typer.echo(f"  {inst['instance_id']}  {inst['state']}  {inst.get('instance_type', '')}")


def env(ctx: typer.Context) -> None:
    """Print `export` lines so the aws CLI or boto3 talk to the sandbox."""
    import shlex

    from submitter.sandbox import api

    for name, value in api.env(settings_of(ctx)).items():
        typer.echo(f"export {name}={shlex.quote(value)}")


def logs(ctx: typer.Context, instance_id: str = typer.Argument(..., help="Instance id.")) -> None:
    """An instance's boot output (like cloud-init-output.log)."""
    from submitter.sandbox import api

    ids.instance(instance_id)
    sys.stdout.write(api.logs(settings_of(ctx), instance_id))


def interrupt(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="Instance id."),
    notice: float = typer.Option(120.0, "--notice", help="Seconds between the notice and termination."),
) -> None:
    """Schedule a spot interruption: IMDS shows the notice, then the instance is terminated."""
    from submitter.errors import UsageError
    from submitter.sandbox import api

    ids.instance(instance_id)
    if not math.isfinite(notice):
        raise UsageError("--notice", f"{notice} is not a number of seconds", "give seconds, e.g. --notice 40")
    result = api.interrupt(settings_of(ctx), instance_id, notice)
    typer.echo(f"{instance_id}: spot interruption notice given; terminating at {result['terminate_at']}")


def interrupt_rate(
    ctx: typer.Context,
    instance_type: str = typer.Argument(..., help="Instance type of the pool, e.g. c5.large."),
    zone: str = typer.Argument(..., help="Availability zone of the pool, e.g. us-east-1b."),
    per_hour: float = typer.Option(..., "--per-hour", help="Interruptions per instance-hour; 0 stops them."),
    notice: float = typer.Option(120.0, "--notice", help="Seconds between each notice and its termination."),
) -> None:
    """Reclaim a pool's instances at a rate: each gets a notice 1/RATE hours after it started."""
    from submitter.errors import UsageError
    from submitter.sandbox import api

    for name, value in (("--per-hour", per_hour), ("--notice", notice)):
        if not math.isfinite(value) or value < 0:
            raise UsageError(name, f"{value} is not a number >= 0", f"give e.g. {name} 60")
    pools = api.interrupt_rate(settings_of(ctx), instance_type, zone, per_hour, notice)["pools"]
    typer.echo(f"{instance_type} in {zone}: " + (f"every instance reclaimed {3600 / per_hour:.0f} s after it starts"
                                                  if per_hour else "no longer interrupted"))
    for pool, rate in sorted(pools.items()):
        typer.echo(f"  {pool}: {rate['per_hour']:g}/h, notice {rate['notice_seconds']:g} s")
