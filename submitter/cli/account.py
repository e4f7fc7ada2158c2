"""Once per account: `init` (create the bucket, repository and key pair; `--batch` for AWS Batch)
and `doctor` (check everything, name each fix)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from submitter.cli.base import settings_of
from submitter.settings import Settings


def init(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Create without asking."),
    key_pair: str = typer.Option(None, "--key-pair", help="Also create this EC2 key pair (for `ssh`); the private "
                                 "key goes to $SUBMITTER_HOME/keys/NAME.pem (0600)."),
    expire_days: int = typer.Option(None, "--expire-days", help="Expire runs and submissions in the bucket after "
                                    "N days (default: keep)."),
    batch: bool = typer.Option(False, "--batch", help="Also create the AWS Batch spot compute environments and job "
                               "queues for `resources.backend: batch` (docs/batch.md)."),
) -> None:
    """Create the bucket, repository (and a key pair) this tool needs, and record them in .env. Idempotent."""
    from submitter import connect
    from submitter.account import init as account

    settings = connect.resolve(settings_of(ctx))
    plan = account.plan_init(connect.aws(settings), settings, Path.cwd(), key_pair, expire_days)
    for line in account.render_plan(plan):
        typer.echo(line)
    if not plan.changes and not plan.dotenv_changes():
        typer.echo("nothing to do: everything exists as wanted")
        _init_batch(settings, batch)
        return
    if not yes:
        if not sys.stdin.isatty():
            from submitter.errors import UsageError

            raise UsageError("submitter init", "not confirmed (no terminal to ask on)", "run `submitter init --yes`")
        if not typer.confirm("create and set the above?"):
            raise typer.Exit(1)
    account.apply_init(plan, typer.echo)
    if plan.key_name:
        typer.echo(f"instances get key pair {plan.key_name} (SUBMITTER_SSH_KEY); connect with `submitter ssh RUN`")
    _init_batch(settings, batch)


def _init_batch(settings: Settings, wanted: bool) -> None:
    """`init --batch`: the AWS Batch compute environments and job queues (idempotent)."""
    if not wanted:
        return
    from submitter import connect
    from submitter.backends.batch import setup

    setup.ensure_batch(connect.aws(settings), settings, typer.echo)


def doctor(
    ctx: typer.Context,
    specs: list[Path] = typer.Argument(None, help="Job specs whose instance types to check quotas for."),
) -> None:
    """Check credentials, permissions, quotas, the docker engine and the settings."""
    from submitter import connect, image
    from submitter.account import doctor as checks_mod

    settings = connect.resolve(settings_of(ctx))
    types: list[str] = []
    if specs:
        from submitter import spec as spec_mod

        types = sorted({t for s in spec_mod.load_many(specs) for t in s.spec.resources.instance_types})
    try:
        aws = connect.aws(settings)
    except Exception as err:  # reported as the credentials check below
        typer.echo(f"FAIL credentials: {err}")
        aws = None
    checks = checks_mod.doctor(settings, aws, types, image.engine)
    for check in checks:
        typer.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            typer.echo(f"     fix: {check.fix}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
