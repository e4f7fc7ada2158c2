"""The command line: parse, call one core function, render. No boto3, docker or paramiko here.

Heavy modules are imported inside the commands so `submitter --help` stays fast.
"""

from __future__ import annotations

import json
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
    add_completion=False,
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


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _say(text: str) -> None:
    typer.echo(text, err=True)


# ---------------------------------------------------------------------------------------------- submit


@app.command()
def submit(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="Job spec files (YAML).", show_default=False),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop: nothing is built or created."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    wait: bool = typer.Option(False, "--wait", help="Block until every run ends; exit 1 if any failed."),
    follow: bool = typer.Option(False, "--follow", help="Like --wait, and stream the logs."),
    submission: str = typer.Option(None, "--id", help="Re-use a submission id: retry a cut-short submit; "
                                   "nothing is created twice."),
    ssh_key: str = typer.Option(None, "--ssh-key", help="EC2 key pair for the instances, so `ssh`/`notebook` can "
                                "log in (default SUBMITTER_SSH_KEY; none: no key)."),
    backend: str = typer.Option(None, "--backend", help="pool (spot workers of your own) or batch (AWS Batch); "
                                "default: each spec's resources.backend."),
) -> None:
    """Submit one or more job specs: build, push, stage, launch spot workers."""
    from submitter import connect
    from submitter import plan as planning
    from submitter import spec as spec_mod

    settings = connect.resolve(_settings(ctx))
    if ssh_key:
        from dataclasses import replace

        settings = replace(settings, ssh_key=ssh_key)
    specs = spec_mod.load_many(files)
    if dry_run:
        from submitter import backends

        plans = [planning.make_plan(s, settings, planning.lookup_prices(s, settings), submission=submission,
                                    backend=backend) for s in specs]
        if as_json:
            shown = [backends.dry_run(p) for p in plans]
            _print_json(shown[0] if len(shown) == 1 else shown)
        else:
            from submitter import render

            for p in plans:
                render.plan(p)
        return
    from submitter import execute, image, progress

    aws = connect.aws(settings)
    view = progress.for_stream(as_json=as_json)
    submitted = execute.submit(aws, settings, specs, os.environ, Path.cwd(), view, image.engine, submission, backend)
    summary = [{"submission_id": s.plan.submission_id, "job": s.plan.job, "image": s.image_uri,
                "runs": [r.run_id for r in s.plan.runs], **s.image_facts} for s in submitted]
    if as_json and not (wait or follow):
        _print_json(summary)
    elif not as_json:
        for s in submitted:
            typer.echo(f"submission {s.plan.submission_id}: {len(s.plan.runs)} run(s)")
            for r in s.plan.runs:
                typer.echo(f"  {r.run_id}")
            typer.echo(f"  follow with: submitter status {s.plan.submission_id}"
                       f"{' --sandbox' if settings.sandbox else ''}")
    if wait or follow:
        states = execute.wait(aws, settings, submitted, follow, _say)
        if as_json:
            _print_json({"submissions": summary, "runs": states})
        failed = [st for st in states if st.get("state") != "succeeded"]
        if failed:
            raise typer.Exit(1)


def submit_main() -> None:
    """The `submit` console script: the same as `submitter submit`."""
    main(["submit", *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------- tracking


@app.command()
def status(
    ctx: typer.Context,
    target: str = typer.Argument(None, help="JOB, SUBMISSION or RUN id; default: recent submissions."),
    as_json: bool = typer.Option(False, "--json"),
    all_: bool = typer.Option(False, "--all", help="Include finished submissions."),
) -> None:
    """Runs and their state, instance, price and cost so far."""
    from submitter import tracking

    settings, s3, where = _tracking(ctx)
    if target:
        run_ids = tracking.resolve(s3, where, target)
    else:
        subs = tracking.submissions(s3, where)
        run_ids = [r for sub in (subs if all_ else subs[-5:]) for r in tracking.runs_of(s3, where, sub)]
    states = tracking.statuses(s3, where, run_ids)
    if not all_ and not target:
        states = [st for st in states if st.get("state") not in tracking.TERMINAL] or states
    if as_json:
        _print_json({"runs": states})
        return
    from submitter import render

    render.statuses(states)


def _tracking(ctx: typer.Context) -> tuple[Settings, Any, Any]:
    from submitter import connect, tracking
    from submitter.aws.s3 import S3
    from submitter.errors import SettingsError

    settings = connect.resolve(_settings(ctx))
    if not settings.bucket:
        raise SettingsError("SUBMITTER_BUCKET", "no bucket is set", "set SUBMITTER_BUCKET, or run `submitter init`")
    aws = connect.aws(settings)
    return settings, S3(aws.client("s3"), settings.bucket), tracking.Where(settings.bucket, settings.prefix)


@app.command()
def logs(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="RUN id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new output until the run ends."),
    agent: bool = typer.Option(False, "--agent", help="The agent's log for the run (pull, restore, uploads)."),
) -> None:
    """A run's container log (or its agent log), from S3 (no SSH needed)."""
    from submitter import tracking

    _, s3, where = _tracking(ctx)
    tracking.print_logs(s3, where, run, sys.stdout, follow=follow, agent=agent, say=_say)


@app.command()
def results(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="RUN, SUBMISSION or JOB (its latest submission)."),
    dest: Path = typer.Option(None, "--dest", help="Download directory; default ./results/<run-id>/."),
) -> None:
    """Download a run's outputs from S3."""
    from submitter import tracking

    _, s3, where = _tracking(ctx)
    run_ids = tracking.resolve(s3, where, target)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("downloading", total=None)
        done = tracking.download_results(
            s3, where, run_ids, dest,
            on_start=lambda files, size: bar.update(task, total=size, description=f"{files} file(s)"),
            on_bytes=lambda n: bar.advance(task, n))
    for root in done.roots:
        files = sum(1 for p in root.rglob("*") if p.is_file() and not p.name.endswith(".part"))
        typer.echo(f"{root}: {files} file(s)")
    _say(f"fetched {done.fetched} file(s) ({done.bytes} bytes), skipped {done.skipped} identical")


@app.command()
def cancel(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="RUN or SUBMISSION id."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json"),
    wait_s: float = typer.Option(600.0, "--timeout", help="Seconds to wait for running runs to stop and upload."),
) -> None:
    """Stop runs gracefully (outputs uploaded), drop queued ones, terminate their instances."""
    from submitter import cancel as cancel_mod
    from submitter import connect
    from submitter.errors import UsageError

    if not yes and not sys.stdin.isatty():
        raise UsageError("submitter cancel", "not confirmed (no terminal to ask on)",
                         f"run `submitter cancel {target} --yes`")
    settings, s3, where = _tracking(ctx)
    scope = cancel_mod.scope(s3, where, target)
    if not yes and not typer.confirm(f"cancel {scope.describe()}?"):
        raise typer.Exit(1)
    result = cancel_mod.cancel(connect.aws(settings), s3, where, scope, _say, wait_s=wait_s)
    if as_json:
        _print_json(result)
        return
    for st in result["runs"]:
        typer.echo(f"{st['run_id']}: {st.get('state')}" + (f" ({st['reason']})" if st.get("reason") else ""))
    if result["removed"]:
        typer.echo(f"removed: {', '.join(result['removed'])}")


@app.command()
def cost(
    ctx: typer.Context,
    target: str = typer.Argument(None, help="SUBMISSION (or RUN, JOB) id; default: submissions since --since."),
    since: str = typer.Option(None, "--since", help="DATE (YYYY-MM-DD, UTC); default: the last 7 days."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What runs cost: spot price history x runtime, plus EBS; savings against on-demand."""
    from datetime import datetime, timedelta, timezone

    from submitter import connect, tracking
    from submitter.aws import ec2 as ec2_api
    from submitter.errors import UsageError

    if target and since:
        raise UsageError("submitter cost", "give a SUBMISSION or --since, not both", "drop one of them")
    try:
        start = (datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=timezone.utc) if since
                 else datetime.now(timezone.utc) - timedelta(days=7))
    except ValueError:
        raise UsageError("--since", f"{since!r} is not a date", "use YYYY-MM-DD, e.g. --since 2026-11-01") from None
    settings, s3, where = _tracking(ctx)
    run_ids = (tracking.resolve(s3, where, target) if target else
               [r for sub in tracking.submissions_since(s3, where, start) for r in tracking.runs_of(s3, where, sub)])
    ec2 = connect.aws(settings).client("ec2")
    report = tracking.costs(s3, where, run_ids, lambda t, az, lo, hi: ec2_api.price_history(ec2, t, az, lo, hi),
                            settings.region)
    if as_json:
        _print_json(report)
        return
    from submitter import render

    render.costs(report)


@app.command()
def prices(
    ctx: typer.Context,
    types: list[str] = typer.Argument(..., help="Instance types, e.g. g4dn.xlarge."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Live spot price per availability zone, cheapest first."""
    from submitter import connect, tracking
    from submitter.aws import ec2 as ec2_api
    from submitter.errors import CapacityError

    settings = connect.resolve(_settings(ctx))
    offers = tracking.prices(ec2_api.spot_prices(connect.aws(settings).client("ec2"), types), settings.region)
    missing = sorted(set(types) - {o["instance_type"] for o in offers})
    if not offers:
        raise CapacityError(f"prices {' '.join(types)}", f"no spot price in {settings.region} for these types",
                            "check the type names (e.g. g4dn.xlarge), or set SUBMITTER_REGION")
    source = "sandbox price table, NOT LIVE" if settings.sandbox else "live spot price history"
    if as_json:
        _print_json({"region": settings.region, "source": source, "offers": offers, "not_offered": missing})
        return
    from submitter import render

    render.prices(offers, f"{settings.region}, {source}")
    if missing:
        typer.echo(f"no spot offer for: {', '.join(missing)}")


@app.command()
def gc(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Find and remove orphaned resources tagged by submitter."""
    from submitter import connect
    from submitter import gc as gc_mod
    from submitter.errors import UsageError

    settings, s3, where = _tracking(ctx)
    aws = connect.aws(settings)
    orphans = gc_mod.find(aws, s3, where)
    if not as_json:
        for o in orphans:
            typer.echo(f"{o.kind:15} {o.id:45} {o.submission}: {o.why}")
    if not orphans:
        if as_json:
            _print_json({"found": [], "removed": []})
        else:
            typer.echo("nothing to remove: no orphaned resource tagged by submitter")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("submitter gc", "not confirmed (no terminal to ask on)", "run `submitter gc --yes`")
        if not typer.confirm(f"remove these {len(orphans)} resource(s)?"):
            raise typer.Exit(1)
    removed = gc_mod.remove(aws, orphans, _say)
    if as_json:
        _print_json({"found": [o.to_json() for o in orphans], "removed": [o.to_json() for o in removed]})
    else:
        typer.echo(f"removed {len(removed)} of {len(orphans)}")
    if len(removed) < len(orphans):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- access


@app.command()
def ssh(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="RUN id."),
    command: list[str] = typer.Argument(None, help="Command to run instead of a shell (after --)."),
    cidr: str = typer.Option(None, "--cidr", help="Source CIDR for the temporary rule; default your /32."),
) -> None:
    """Open a shell (or run a command) on a run's instance; port 22 opens for your /32 only, then closes."""
    from submitter import connect
    from submitter.access import ssh as ssh_mod

    settings = connect.resolve(_settings(ctx))
    code = ssh_mod.ssh(connect.aws(settings), settings, run, command or [], cidr, _say)
    if code:
        raise typer.Exit(code)


@app.command()
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

    settings = connect.resolve(_settings(ctx))

    def ready(nb: Any) -> None:
        typer.echo(f"open {nb.url}")
        sys.stdout.flush()
        _say(f"forwarding localhost:{nb.local_port} -> {nb.remote[0]}:{nb.remote[1]} in {nb.run_id}; Ctrl-C to stop")

    open_notebook(connect.aws(settings), settings, target, port, local_port, command, not no_start, cidr, _say, ready,
                  os.environ, Path.cwd())


@app.command()
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

    settings = connect.resolve(_settings(ctx))
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


@app.command()
def doctor(
    ctx: typer.Context,
    specs: list[Path] = typer.Argument(None, help="Job specs whose instance types to check quotas for."),
) -> None:
    """Check credentials, permissions, quotas, the docker engine and the settings."""
    from submitter import connect, image
    from submitter.account import doctor as checks_mod

    settings = connect.resolve(_settings(ctx))
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


# ---------------------------------------------------------------------------------------------- sandbox


@sandbox_app.command("up")
def sandbox_up(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Start the sandbox (idempotent); returns when it is ready."""
    from submitter.sandbox import api

    state = api.up(_settings(ctx), _say)
    if as_json:
        _print_json(state)
    else:
        typer.echo(f"sandbox ready: {state['endpoint_url']} (registry {state['registry']})")
        typer.echo("inspect it with: eval \"$(submitter sandbox env)\"; aws ec2 describe-instances")


@sandbox_app.command("down")
def sandbox_down(ctx: typer.Context) -> None:
    """Stop the sandbox: no process, container, loop device or mount is left behind."""
    from submitter.sandbox import api

    api.down(_settings(ctx), _say)
    typer.echo("sandbox down")


@sandbox_app.command("status")
def sandbox_status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Whether the sandbox runs, its endpoints, and its instances."""
    from submitter.sandbox import api

    state = api.status(_settings(ctx))
    if as_json:
        _print_json(state)
        return
    typer.echo(f"sandbox: {'up' if state.get('up') else 'down'}")
    for key in ("endpoint_url", "registry", "region"):
        if state.get(key):
            typer.echo(f"  {key}: {state[key]}")
    for inst in state.get("instances", []):
        typer.echo(f"  {inst['instance_id']}  {inst['state']}  {inst.get('instance_type', '')}")


@sandbox_app.command("env")
def sandbox_env(ctx: typer.Context) -> None:
    """Print `export` lines so the aws CLI or boto3 talk to the sandbox."""
    import shlex

    from submitter.sandbox import api

    for name, value in api.env(_settings(ctx)).items():
        typer.echo(f"export {name}={shlex.quote(value)}")


@sandbox_app.command("logs")
def sandbox_logs(ctx: typer.Context, instance_id: str = typer.Argument(..., help="Instance id.")) -> None:
    """An instance's boot output (like cloud-init-output.log)."""
    from submitter.sandbox import api

    sys.stdout.write(api.logs(_settings(ctx), instance_id))


@sandbox_app.command("interrupt")
def sandbox_interrupt(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="Instance id."),
    notice: float = typer.Option(120.0, "--notice", help="Seconds between the notice and termination."),
) -> None:
    """Schedule a spot interruption: IMDS shows the notice, then the instance is terminated."""
    from submitter.sandbox import api

    result = api.interrupt(_settings(ctx), instance_id, notice)
    typer.echo(f"{instance_id}: spot interruption notice given; terminating at {result['terminate_at']}")


# ---------------------------------------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point."""
    command = typer.main.get_command(app)
    command.main(args=argv if argv is not None else sys.argv[1:], prog_name="submitter")
    raise SystemExit(0)
