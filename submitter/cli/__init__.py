"""The command line: parse, call one core function, render. No boto3, docker or paramiko here.

`base` is the root (global flags, the one error handler, entry points); each other module is one group of
commands. Heavy modules are imported inside the commands so `submitter --help` stays fast.
"""

from collections.abc import Callable

from submitter.cli import access, account, cache, sandbox, submit, tracking
from submitter.cli import compare as compare_cli
from submitter.cli import report as report_cli
from submitter.cli import rerun as rerun_cli
from submitter.cli.base import app, main, sandbox_app, submit_main

# Every command, in the order `submitter --help` lists them.
COMMANDS: list[Callable[..., None]] = [
    submit.submit, cache.cache, rerun_cli.rerun, rerun_cli.diff, tracking.status, tracking.logs, tracking.results,
    tracking.cancel, tracking.cost, tracking.prices, compare_cli.compare, report_cli.report,
    tracking.gc, access.ssh, access.notebook, account.init, account.doctor,
]
SANDBOX_COMMANDS: list[Callable[..., None]] = [
    sandbox.up, sandbox.down, sandbox.status, sandbox.env, sandbox.logs, sandbox.interrupt, sandbox.interrupt_rate,
]
for command in COMMANDS:
    app.command()(command)
for command in SANDBOX_COMMANDS:
    sandbox_app.command(command.__name__.replace("_", "-"))(command)

__all__ = ["app", "main", "submit_main"]
