"""Where a run can be reached: its instance, address, security group and key (`locate`), the caller's own
address range, and TCP 22 opened for that range only while a session lasts (`port_22_open`).

The rule is added before connecting and removed in `finally` (errors, Ctrl-C and SIGTERM included).
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from submitter import contract, ownership
from submitter.aws import ec2 as ec2_api
from submitter.aws.session import Aws
from submitter.errors import RemoteError, UsageError
from submitter.settings import Settings

Say = Callable[[str], None]
AWS_USER = "ec2-user"  # Amazon Linux's login user (the AMI of docs/decisions.md)
CHECKIP = "https://checkip.amazonaws.com"


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
    from submitter.aws import s3 as s3_api
    from submitter.aws.s3 import S3

    submission = ownership.submission_of_run(run_id)  # the id's own, never what its status claims
    if not settings.bucket:
        raise UsageError("SUBMITTER_BUCKET", "no bucket is set", "run `submitter init`, or set SUBMITTER_BUCKET")
    s3 = S3(s3_api.client(aws), settings.bucket)
    (status,) = tracking.statuses(s3, tracking.Where(settings.bucket, settings.prefix), [run_id])
    state = status.get("state", "unknown")
    where = f"run {run_id}"
    if state not in contract.ACTIVE or not status.get("instance_id"):
        raise RemoteError(where, f"is {state}: no instance runs it now",
                          f"see `submitter status {run_id}`; connect while it is running")
    iid = str(status["instance_id"])
    inst = ownership.instance(ec2_api.client(aws), iid, submission, run_id)  # a forged status: refused here
    if inst is None or inst["State"]["Name"] != "running":
        raise RemoteError(where, f"its instance {iid} is {inst['State']['Name'] if inst else 'gone'}",
                          f"see `submitter status {run_id}`")
    key_name = inst.get("KeyName")
    if not key_name:
        raise RemoteError(where, f"instance {iid} was launched without a key pair, so it accepts no SSH login",
                          "create one with `submitter init --key-pair NAME` (sets SUBMITTER_SSH_KEY), then submit "
                          "again (or `submit --ssh-key NAME`)")
    key_path = settings.key_file(key_name)
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


@contextlib.contextmanager
def port_22_open(aws: Aws, target: Target, cidr: str, say: Say) -> Iterator[None]:
    """TCP 22 from `cidr` on the instance's security group while the block runs; removed however it ends."""
    ec2 = ec2_api.client(aws)
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
