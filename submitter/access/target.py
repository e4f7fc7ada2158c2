"""Where a run can be reached: its instance, address, security group and key (`locate`), the caller's own
address range, and TCP 22 opened for that range only while a session lasts (`port_22_open`).

The rule is a session's own (a security group of its own on the instance), added before connecting and removed in
`finally` (errors, Ctrl-C, SIGTERM and SIGHUP included).
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
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
SESSION_S = 12 * 3600  # how long a session's rule is taken to be in use; after it, gc may remove it
_SIGNALS = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]


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
    vpc_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # the instance's submitter tags; a session's group copies them


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

    submission = ownership.submission_of_run(run_id)  # the id's own, never what its status claims
    if not settings.bucket:
        raise UsageError("SUBMITTER_BUCKET", "no bucket is set", "run `submitter init`, or set SUBMITTER_BUCKET")
    s3 = S3.connect(aws, settings.bucket)
    (status,) = tracking.statuses(s3, tracking.Where(settings.bucket, settings.prefix), [run_id])
    state = status.get("state", "unknown")
    where = f"run {run_id}"
    # A failed run whose instance is kept (limits.keep_on_failure, docs/keep.md) is reachable until its window ends.
    kept = contract.kept_window(contract.Status.from_json(status)) is not None
    if (state not in contract.ACTIVE and not kept) or not status.get("instance_id"):
        raise RemoteError(where, f"is {state}: no instance runs it now",
                          f"see `submitter status {run_id}`; connect while it is running (or, with "
                          "limits.keep_on_failure or `submit --keep-on-failure`, within the window after it fails)")
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
    tags = {k: v for k, v in ownership.tags_of(inst).items()
            if k in (contract.TAG_SUBMISSION, contract.TAG_BUCKET, contract.TAG_PREFIX)}
    return Target(run_id, iid, host, port, user, str(group["GroupId"]), key_path, f"submitter-{run_id}",
                  str(inst.get("VpcId") or ""), tags)


@contextlib.contextmanager
def port_22_open(aws: Aws, target: Target, cidr: str, say: Say, now: datetime | None = None) -> Iterator[None]:
    """TCP 22 from `cidr` to the instance while the block runs, through a security group of this session's own
    (one rule, its description "submitter ssh TOKEN until TIME"), attached to the instance and removed however
    the block ends: errors, Ctrl-C, SIGTERM and SIGHUP (a closed terminal).

    A group per session because EC2 keeps one rule per (port, source) in a group: two sessions from one address
    would share a rule, and the first to end would close it under the other. A `kill -9` leaves the group behind;
    it is tagged with the run's submission and the time, and `submitter gc` removes it after that time."""
    ec2 = ec2_api.client(aws)
    token = secrets.token_hex(4)
    until = contract.iso((now or datetime.now(timezone.utc)) + timedelta(seconds=SESSION_S))
    mark = f"{contract.SSH_RULE_MARK} {token} until {until}"
    # A signal the caller ignores stays ignored (under `nohup` a hang-up does not end the process, so it must
    # not end the session either).
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN}
    with contextlib.suppress(ValueError):  # not the main thread: nothing to install
        for sig in previous:
            signal.signal(sig, _interrupt)
    group = ""
    try:
        group = ec2_api.create_group(ec2, f"submitter-ssh-{target.run_id}-{token}"[:255], mark, target.vpc_id,
                                     {**target.tags, contract.TAG_SSH_UNTIL: until})
        ec2_api.authorize_ssh(ec2, group, cidr, mark)
        _attach(ec2, target.instance_id, group)
        say(f"opened TCP 22 for {cidr} to {target.instance_id} through {group} (removed when this session ends)")
        yield
    finally:
        with contextlib.suppress(ValueError):
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if group:
            close_session(ec2, target.instance_id, group, say)


def _attach(ec2: Any, instance_id: str, group: str, tries: int = 3) -> None:
    """Add the group to the instance's; the list is read, then written, so a session starting at the same moment
    could write over it: read back, and add again when it is missing."""
    for _ in range(tries):
        current = ec2_api.instance_groups(ec2, instance_id) or []
        if group in current:
            return
        ec2_api.set_instance_groups(ec2, instance_id, [*current, group])
    if group not in (ec2_api.instance_groups(ec2, instance_id) or []):
        raise RemoteError(f"instance {instance_id}", f"security group {group} could not be attached",
                          "try again; `submitter gc` removes the group once its time has passed")


def close_session(ec2: Any, instance_id: str, group: str, say: Say, wait_s: float = 30) -> bool:
    """Detach a session's group from the instance (if it still runs) and delete it; False when it stays."""
    current = ec2_api.instance_groups(ec2, instance_id)
    if current is not None and group in current:
        ec2_api.set_instance_groups(ec2, instance_id, [g for g in current if g != group])
    deadline = time.monotonic() + wait_s
    while not ec2_api.delete_security_group(ec2, group):  # EC2 may still count it in use for a few seconds
        if not ec2_api.security_groups(ec2, [{"Name": "group-id", "Values": [group]}]):
            return True  # gone already (gc took a session past its time)
        if time.monotonic() > deadline:
            say(f"security group {group} could not be deleted yet (it holds no instance now); `submitter gc` "
                "removes it once its time has passed")
            return False
        time.sleep(2)
    say(f"closed TCP 22 to {instance_id}: {group} removed")
    return True


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
