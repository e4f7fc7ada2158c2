"""The SSH transport to a run's instance (paramiko), and what runs over it: one command, or an interactive
shell (`submitter ssh`)."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import sys
import threading
import time
from typing import Any

from submitter.access.hostkeys import KnownHosts, console_host_keys, verify_host_key
from submitter.access.target import Say, Target, caller_cidr, locate, port_22_open
from submitter.aws import ec2 as ec2_api
from submitter.aws.session import Aws
from submitter.errors import RemoteError
from submitter.settings import Settings

CONNECT_WAIT_S = 90  # a new rule takes seconds to apply on AWS; an instance's sshd a minute to come up


def connect(aws: Aws, settings: Settings, target: Target, say: Say, wait_s: float = CONNECT_WAIT_S) -> Any:
    """An authenticated paramiko Transport to the instance, its host key verified."""
    import paramiko

    deadline = time.monotonic() + wait_s
    last: Exception | None = None
    while True:
        transport = None
        try:
            sock = socket.create_connection((target.host, target.port), timeout=10)
            transport = paramiko.Transport(sock)
            transport.start_client(timeout=15)
            break
        except (OSError, paramiko.SSHException, EOFError) as exc:
            last = exc
            if transport is not None:
                transport.close()
            if time.monotonic() > deadline:
                raise RemoteError(f"ssh {target.user}@{target.host}:{target.port}",
                                  f"no SSH answer from {target.instance_id} within {wait_s:.0f} s ({last})",
                                  "check that the instance has booted (`submitter sandbox logs` / the console) "
                                  "and that your address is the one in --cidr") from exc
            time.sleep(2)
    try:
        key = transport.get_remote_server_key()
        offered = f"{key.get_name()} {key.get_base64()}"
        console = console_host_keys(ec2_api.console_output(ec2_api.client(aws), target.instance_id))
        verify_host_key(target.instance_id, offered, console, KnownHosts(settings.home / "known_hosts"), say)
        pkey = paramiko.PKey.from_path(target.key_path)
        transport.auth_publickey(target.user, pkey)
    except paramiko.AuthenticationException as exc:
        transport.close()
        raise RemoteError(f"ssh {target.user}@{target.instance_id}", f"the key {target.key_path} was refused",
                          "the instance was launched with another key pair; check SUBMITTER_SSH_KEY") from exc
    except BaseException:
        transport.close()
        raise
    return transport


def sudo(target: Target) -> str:
    return "" if target.user == "root" else "sudo -n "


def ssh(aws: Aws, settings: Settings, run_id: str, command: list[str], cidr: str | None, say: Say) -> int:
    """Run `command` (or an interactive shell) on the run's instance; returns the remote exit status."""
    source = caller_cidr(cidr, settings.sandbox)  # a bad --cidr fails before anything is read or opened
    target = locate(aws, settings, run_id)
    with port_22_open(aws, target, source, say):
        transport = connect(aws, settings, target, say)
        try:
            if command:
                return run_command(transport, shlex.join(command), sys.stdout.buffer, sys.stderr.buffer)
            return interactive_shell(transport)
        finally:
            transport.close()


def run_command(transport: Any, command: str, out: Any, err: Any) -> int:
    channel = transport.open_session()
    channel.exec_command(command)
    channel.shutdown_write()
    while True:
        if channel.recv_ready():
            out.write(channel.recv(65536))
            out.flush()
        if channel.recv_stderr_ready():
            err.write(channel.recv_stderr(65536))
            err.flush()
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        time.sleep(0.01)
    return int(channel.recv_exit_status())


def capture(transport: Any, command: str) -> tuple[int, str]:
    """Run `command`; (exit status, stdout + stderr)."""
    import io

    out, err = io.BytesIO(), io.BytesIO()
    code = run_command(transport, command, out, err)
    return code, (out.getvalue() + err.getvalue()).decode(errors="replace")


def interactive_shell(transport: Any) -> int:
    """A login shell with a pty, the local terminal in raw mode (POSIX) or line mode (Windows)."""
    size = os.get_terminal_size() if sys.stdin.isatty() else os.terminal_size((80, 24))
    channel = transport.open_session()
    channel.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns, height=size.lines)
    channel.invoke_shell()
    if os.name == "posix" and sys.stdin.isatty():
        _posix_shell(channel)
    else:
        _threaded_shell(channel)
    return int(channel.recv_exit_status()) if channel.exit_status_ready() else 0


def _posix_shell(channel: Any) -> None:
    import select
    import termios
    import tty

    saved = termios.tcgetattr(sys.stdin)
    try:
        tty.setraw(sys.stdin.fileno())
        channel.settimeout(0.0)
        while True:
            ready, _, _ = select.select([channel, sys.stdin], [], [])
            if channel in ready:
                try:
                    data = channel.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if sys.stdin in ready:
                data = os.read(sys.stdin.fileno(), 1024)
                if not data:
                    break
                channel.send(data)
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


def _threaded_shell(channel: Any) -> None:
    def reader() -> None:
        while data := channel.recv(4096):
            sys.stdout.buffer.write(data)
            sys.stdout.flush()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    with contextlib.suppress(EOFError, OSError):
        while not channel.closed:
            data = sys.stdin.buffer.read1(1024) if hasattr(sys.stdin.buffer, "read1") else sys.stdin.buffer.read(1)
            if not data:
                break
            channel.send(data)
    thread.join(5)
