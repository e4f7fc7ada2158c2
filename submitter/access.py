"""Interactive access to a run's instance with paramiko: a shell or a command (`ssh`), and a port of the job
container forwarded to localhost (`notebook`).

Port 22 is opened for the caller's own address only, for as long as the session lasts: the rule is added
before connecting and removed in `finally` (errors, Ctrl-C and SIGTERM included). Host keys are checked
against the instance's console output (cloud-init prints them there), or recorded on first use with a
loud message and checked strictly afterwards; an unknown key is never accepted silently.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from submitter.aws import ec2 as ec2_api
from submitter.aws.session import Aws
from submitter.errors import RemoteError, UsageError
from submitter.settings import Settings

Say = Callable[[str], None]
AWS_USER = "ec2-user"  # Amazon Linux's login user (the AMI of docs/decisions.md)
CONNECT_WAIT_S = 90  # a new rule takes seconds to apply on AWS; an instance's sshd a minute to come up
CHECKIP = "https://checkip.amazonaws.com"
LIVE_STATES = ("starting", "running")


@dataclass(frozen=True)
class Target:
    run_id: str
    instance_id: str
    host: str
    port: int
    user: str
    group_id: str
    key_path: Path
    container: str


# ---------------------------------------------------------------------------------------------- where


def caller_cidr(cidr: str | None, sandbox: bool, fetch: Callable[[], str] | None = None) -> str:
    """The source range for the temporary rule: `--cidr`, else the caller's own address as a /32 (/128).

    In the sandbox the caller is 127.0.0.1. Anything wider than a /24 (IPv4) or /64 (IPv6) is refused:
    the rule is for one person's machine, never the internet."""
    if cidr:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise UsageError("--cidr", f"{cidr!r} is not an address range", "use e.g. 203.0.113.7/32") from None
        if network.prefixlen < (24 if network.version == 4 else 64):
            raise UsageError("--cidr", f"{cidr} is wider than one site (0.0.0.0/0 never is allowed)",
                             "use your own address as a /32, e.g. 203.0.113.7/32")
        return str(network)
    if sandbox:
        return "127.0.0.1/32"
    try:
        text = (fetch or _checkip)().strip()
        address = ipaddress.ip_address(text)
    except Exception as exc:
        raise RemoteError("your public address", f"could not be detected ({exc})",
                          "pass it with --cidr ADDRESS/32 (e.g. from your router or VPN)") from exc
    return f"{address}/{32 if address.version == 4 else 128}"


def _checkip() -> str:
    import urllib.request

    with urllib.request.urlopen(CHECKIP, timeout=10) as response:
        return str(response.read().decode())


def locate(aws: Aws, settings: Settings, run_id: str) -> Target:
    """The run's instance, its address, security group and key; every missing piece is an error with the fix."""
    from submitter import tracking
    from submitter.aws.s3 import S3

    if not settings.bucket:
        raise UsageError("SUBMITTER_BUCKET", "no bucket is set", "run `submitter init`, or set SUBMITTER_BUCKET")
    s3 = S3(aws.client("s3"), settings.bucket)
    (status,) = tracking.statuses(s3, tracking.Where(settings.bucket, settings.prefix), [run_id])
    state = status.get("state", "unknown")
    where = f"run {run_id}"
    if state not in LIVE_STATES or not status.get("instance_id"):
        raise RemoteError(where, f"is {state}: no instance runs it now",
                          f"see `submitter status {run_id}`; connect while it is running")
    iid = str(status["instance_id"])
    inst = ec2_api.instance(aws.client("ec2"), iid)
    if inst is None or inst["State"]["Name"] != "running":
        raise RemoteError(where, f"its instance {iid} is {inst['State']['Name'] if inst else 'gone'}",
                          f"see `submitter status {run_id}`")
    key_name = inst.get("KeyName")
    if not key_name:
        raise RemoteError(where, f"instance {iid} was launched without a key pair, so it accepts no SSH login",
                          "create one with `submitter init --key-pair NAME` (sets SUBMITTER_SSH_KEY), then submit "
                          "again (or `submit --ssh-key NAME`)")
    key_path = settings.home / "keys" / f"{key_name}.pem"
    if not key_path.is_file():
        raise RemoteError(where, f"the private key of key pair {key_name} is not at {key_path}",
                          f"copy it there (mode 0600); `submitter init --key-pair {key_name}` saves it there")
    groups = inst.get("SecurityGroups", [])
    if not groups:
        raise RemoteError(where, f"instance {iid} has no security group", "see the instance in the EC2 console")
    group = next((g for g in groups if g.get("GroupName", "").startswith("submitter-")), groups[0])
    if settings.sandbox:
        from submitter.sandbox import api

        endpoint = api.ssh_endpoint(settings, iid)
        if endpoint is None:
            raise RemoteError(where, f"sandbox instance {iid} runs no sshd", "see `submitter sandbox logs " + iid + "`")
        host, port, user = str(endpoint["host"]), int(endpoint["port"]), str(endpoint["user"])
    else:
        host = inst.get("PublicIpAddress") or ""
        if not host:
            raise RemoteError(where, f"instance {iid} has no public IP address",
                              "launch in subnets that assign public IPs (the default VPC's do), or connect "
                              "through a VPN/bastion with --cidr")
        port, user = 22, AWS_USER
    return Target(run_id, iid, host, port, user, str(group["GroupId"]), key_path, f"submitter-{run_id}")


# ---------------------------------------------------------------------------------------------- the rule


@contextlib.contextmanager
def port_22_open(aws: Aws, target: Target, cidr: str, say: Say) -> Iterator[None]:
    """TCP 22 from `cidr` on the instance's security group while the block runs; removed however it ends."""
    ec2 = aws.client("ec2")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    added = ec2_api.authorize_ssh(ec2, target.group_id, cidr, f"submitter ssh {target.run_id} since {stamp}")
    if added:
        say(f"opened TCP 22 on {target.group_id} for {cidr} (removed when this session ends)")
    else:
        say(f"TCP 22 was already open for {cidr} on {target.group_id} (another session?): it is left as it is")
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not the main thread: nothing to install
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
        if added:
            ec2_api.revoke_ssh(ec2, target.group_id, cidr)
            say(f"closed TCP 22 on {target.group_id} for {cidr}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------------- host keys


def console_host_keys(text: str) -> list[str]:
    """`TYPE BASE64` of each key in cloud-init's "SSH HOST KEY KEYS" block of the console output."""
    match = re.search(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", text, re.S)
    if not match:
        return []
    keys = []
    for line in match.group(1).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(("ssh-", "ecdsa-")):
            keys.append(f"{parts[0]} {parts[1]}")
    return keys


class KnownHosts:
    """`$SUBMITTER_HOME/known_hosts`: `INSTANCE-ID TYPE BASE64` lines, keyed by instance (IPs are reused)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, instance_id: str) -> list[str]:
        if not self.path.is_file():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == instance_id:
                found.append(f"{parts[1]} {parts[2]}")
        return found

    def add(self, instance_id: str, key: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(f"{instance_id} {key}\n")


def fingerprint(key: str) -> str:
    import base64
    import hashlib

    raw = base64.b64decode(key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def verify_host_key(instance_id: str, offered: str, console: list[str], known: KnownHosts, say: Say) -> None:
    """Accept `offered` only if it is the recorded key, or the console's; else record it loudly (first use)."""
    recorded = known.get(instance_id)
    if recorded:
        if offered in recorded:
            return
        raise RemoteError(f"host key of {instance_id}", f"{fingerprint(offered)} is NOT the key recorded in "
                          f"{known.path}: someone may be intercepting the connection",
                          f"if the instance really changed its key, delete its line from {known.path}")
    if console:
        if offered not in console:
            raise RemoteError(f"host key of {instance_id}", f"{fingerprint(offered)} is not among the keys the "
                              "instance printed to its console: someone may be intercepting the connection",
                              f"compare with `aws ec2 get-console-output --instance-id {instance_id}`")
        known.add(instance_id, offered)
        say(f"host key {fingerprint(offered)} matches the instance's console output; recorded in {known.path}")
        return
    known.add(instance_id, offered)
    say(f"WARNING: {instance_id} has not printed its host keys to its console yet, so its key cannot be verified."
        f"\nWARNING: trusting it on first use: {fingerprint(offered)}, recorded in {known.path};"
        "\nWARNING: any other key for this instance will be refused.")


# ---------------------------------------------------------------------------------------------- connect


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
        console = console_host_keys(ec2_api.console_output(aws.client("ec2"), target.instance_id))
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


# ---------------------------------------------------------------------------------------------- ssh


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


# ---------------------------------------------------------------------------------------------- forward


class Forward:
    """Local TCP port -> (host, port) as seen from the instance, over the SSH transport (direct-tcpip)."""

    def __init__(self, transport: Any, remote: tuple[str, int], local_port: int) -> None:
        self.transport = transport
        self.remote = remote
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.server.bind(("127.0.0.1", local_port))
        except OSError:
            self.server.bind(("127.0.0.1", 0))  # taken: any free port (the URL printed says which)
        self.server.listen(16)
        self.port = int(self.server.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, peer = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client, peer), daemon=True).start()

    def _handle(self, client: socket.socket, peer: tuple[str, int]) -> None:
        try:
            channel = self.transport.open_channel("direct-tcpip", self.remote, peer)
        except Exception:
            client.close()
            return
        _pump_pair(client, channel)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.close()


def _pump_pair(sock: socket.socket, channel: Any) -> None:
    def up() -> None:
        with contextlib.suppress(Exception):
            while data := sock.recv(65536):
                channel.sendall(data)
        with contextlib.suppress(Exception):
            channel.shutdown_write()

    thread = threading.Thread(target=up, daemon=True)
    thread.start()
    with contextlib.suppress(Exception):
        while data := channel.recv(65536):
            sock.sendall(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    thread.join(30)
    channel.close()
    sock.close()


def wait_port(transport: Any, remote: tuple[str, int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            channel = transport.open_channel("direct-tcpip", remote, ("127.0.0.1", 0), timeout=5)
        except Exception:
            time.sleep(1)
            continue
        channel.close()
        return True
    return False


# ---------------------------------------------------------------------------------------------- notebook


def submit_for_notebook(aws: Aws, settings: Settings, spec_file: Path, environ: Any, cwd: Path, say: Say,
                        timeout_s: float = 1800) -> str:
    """Submit a spec (with the key pair) and wait until its first run is running; returns that run id."""
    from submitter import execute, image, progress, tracking
    from submitter import spec as spec_mod
    from submitter.aws.s3 import S3

    if not settings.ssh_key:
        raise UsageError("notebook SPEC", "no key pair for the instances, so nothing could log in",
                         "run `submitter init --key-pair NAME` (sets SUBMITTER_SSH_KEY), or set SUBMITTER_SSH_KEY")
    (submitted,) = execute.submit(aws, settings, spec_mod.load_many([spec_file]), environ, cwd,
                                  progress.for_stream(as_json=False), image.engine)
    run_id = submitted.plan.runs[0].run_id
    say(f"submitted {submitted.plan.submission_id}; waiting for {run_id} to run")
    assert settings.bucket
    s3, where = S3(aws.client("s3"), settings.bucket), tracking.Where(settings.bucket, settings.prefix)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (status,) = tracking.statuses(s3, where, [run_id])
        if status.get("state") == "running":
            return run_id
        if status.get("state") in tracking.TERMINAL:
            raise RemoteError(f"run {run_id}", f"ended ({status.get('state')}) before it could be opened",
                              f"see `submitter logs {run_id}`")
        time.sleep(3)
    raise RemoteError(f"run {run_id}", f"not running after {timeout_s / 60:.0f} minutes",
                      f"see `submitter status {run_id}`; then `submitter notebook {run_id}`")


JUPYTER = "jupyter lab --ip=0.0.0.0 --port={port} --no-browser --allow-root --ServerApp.root_dir=/"


@dataclass(frozen=True)
class Notebook:
    url: str
    local_port: int
    remote: tuple[str, int]


def notebook(aws: Aws, settings: Settings, run_id: str, port: int, local_port: int | None, command: str | None,
             start: bool, cidr: str | None, say: Say, on_ready: Callable[[Notebook], None],
             until: Callable[[], bool] | None = None) -> None:
    """Serve `port` of the run's container on localhost until Ctrl-C (or `until()`), starting Jupyter (or
    `command`) in the container first unless `start` is False; `on_ready` gets the local URL."""
    source = caller_cidr(cidr, settings.sandbox)  # a bad --cidr fails before anything is read or opened
    target = locate(aws, settings, run_id)
    with port_22_open(aws, target, source, say):
        transport = connect(aws, settings, target, say)
        forward = None
        pid_file = f"/tmp/submitter-notebook-{port}.pid"
        try:
            docker = f"{sudo(target)}docker"
            code, address = capture(transport, f"{docker} inspect --format "
                                    "'{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' " + target.container)
            ips = address.split()
            if code != 0 or not ips:
                raise RemoteError(f"run {run_id}", f"its container {target.container} is not running on "
                                  f"{target.instance_id} ({address.strip()[:200]})", f"see `submitter status {run_id}`")
            remote = (ips[0], port)
            log = f"/tmp/submitter-notebook-{port}.log"
            if start:
                if command is None:
                    code, _ = capture(transport, f"{docker} exec {target.container} sh -c 'command -v jupyter'")
                    if code != 0:
                        raise RemoteError(f"run {run_id}", "jupyter is not installed in the job's image",
                                          "add jupyterlab to the image, or serve something else: "
                                          f"--command 'python -m http.server {port}' (or --no-start to forward "
                                          "a port the job already serves, e.g. TensorBoard)")
                    command = JUPYTER.format(port=port)
                inner = f"{command} >{log} 2>&1 & echo $! >{pid_file}"
                code, out = capture(transport, f"{docker} exec {target.container} sh -c {shlex.quote(inner)}")
                if code != 0:
                    raise RemoteError(f"run {run_id}", f"could not start {command!r}: {out.strip()[:300]}",
                                      "try the command by hand: `submitter ssh RUN -- docker exec -it "
                                      f"{target.container} sh`")
                say(f"started in {target.container}: {command}")
            if not wait_port(transport, remote, 120):
                _, tail = capture(transport, f"{docker} exec {target.container} tail -n 20 {log}")
                raise RemoteError(f"run {run_id}", f"nothing listens on port {port} in {target.container}",
                                  f"check the server's output: {tail.strip()[-500:] or '(none)'}")
            token = ""
            if start and command and command.startswith("jupyter"):
                for _ in range(20):
                    _, text = capture(transport, f"{docker} exec {target.container} cat {log}")
                    found = re.search(r"[?&]token=([0-9a-zA-Z]+)", text)
                    if found:
                        token = found.group(1)
                        break
                    time.sleep(1)
            forward = Forward(transport, remote, local_port or port)
            url = f"http://127.0.0.1:{forward.port}/" + (f"lab?token={token}" if token else "")
            on_ready(Notebook(url, forward.port, remote))
            while transport.is_active() and not (until and until()):
                time.sleep(0.5)
            if not transport.is_active():
                raise RemoteError(f"ssh {target.instance_id}", "the connection closed", "run the command again")
        finally:
            if forward is not None:
                forward.close()
            if start and transport.is_active():
                with contextlib.suppress(Exception):
                    capture(transport, f"{sudo(target)}docker exec {target.container} sh -c "
                            + shlex.quote(f"kill $(cat {pid_file}) 2>/dev/null; rm -f {pid_file}"))
            transport.close()
