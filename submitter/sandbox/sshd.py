"""SSH access to a sandbox instance: a real sshd per instance launched with a key pair, reached through a gate
that applies the instance's security-group rules for TCP 22, with its host key in the console output.

On EC2 cloud-init puts the key pair's public key in authorized_keys and prints the host keys to the
console. Here (in the daemon) an instance with a KeyName gets: the key pair's public key (from the EC2
API) as its only authorized key, its own ED25519 host key, `/usr/sbin/sshd` on a private loopback port,
and a gate on another loopback port that stands in for the instance's port 22: each new connection is
let through only while one of the instance's security groups has an inbound rule for TCP 22 covering the
caller's address (127.0.0.1 here), as EC2 would; otherwise it is closed at once. A login lands in the
instance's simulated host (`docker exec`), as a login on the instance would.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shlex
import socket
import socketserver
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("submitter.sandbox.sshd")

SSHD = "/usr/sbin/sshd"
USER = "root"  # the host runs everything as root; on AWS it would be ec2-user
CONSOLE: dict[str, str] = {}  # instance id -> what GetConsoleOutput returns (daemon process only)
_LIVE: dict[str, Access] = {}


@dataclass
class Access:
    instance_id: str
    port: int  # the gate: the instance's "port 22"
    sshd_port: int
    sshd: subprocess.Popen[bytes]
    gate: socketserver.ThreadingTCPServer

    def record(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "user": USER, "sshd_pid": self.sshd.pid,
                "sshd_port": self.sshd_port}


def install_console_output() -> None:
    """GetConsoleOutput answers with the instance's console (boot messages and host keys) when it has one."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.ec2.responses.general import General
    from moto.ec2.utils import Base64EncodedString

    original = General.get_console_output

    def get_console_output(self: Any) -> ActionResult:
        instance_id = self._get_param("InstanceId")
        if instance_id not in CONSOLE:
            return original(self)
        instance = self.ec2_backend.get_instance(instance_id)
        return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow(),
                             "Output": Base64EncodedString.from_raw_string(CONSOLE[instance_id])})

    General.get_console_output = get_console_output  # type: ignore[method-assign]


def start(clients: Any, inst: dict[str, Any], template: dict[str, Any], directory: Path,
          container: str) -> Access | None:
    """Start the instance's sshd and gate when it was launched with a key pair; None when it was not."""
    iid = inst["InstanceId"]
    key_name = inst.get("KeyName") or template.get("KeyName")
    if not key_name:
        return None
    pairs = clients("ec2").describe_key_pairs(KeyNames=[key_name], IncludePublicKey=True)["KeyPairs"]
    ssh_dir = directory / "ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (ssh_dir / "authorized_keys").write_text(pairs[0]["PublicKey"].strip() + "\n")
    host_key = ssh_dir / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{iid}", "-f", str(host_key)],
                       check=True, capture_output=True)
    enter = ssh_dir / "enter.sh"
    enter.write_text(ENTER.replace("CONTAINER", shlex.quote(container)))
    enter.chmod(0o755)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation directory
    sshd_port = _free_port()
    with (ssh_dir / "sshd.log").open("ab") as out:
        sshd = subprocess.Popen([
            SSHD, "-D", "-e", "-f", "/dev/null", "-p", str(sshd_port), "-h", str(host_key),
            "-o", "ListenAddress=127.0.0.1", "-o", "StrictModes=no", "-o", "UsePAM=no",
            "-o", f"AuthorizedKeysFile={ssh_dir / 'authorized_keys'}", "-o", f"PidFile={ssh_dir / 'sshd.pid'}",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            "-o", "PermitRootLogin=prohibit-password", "-o", "AllowTcpForwarding=local", "-o", "X11Forwarding=no",
            "-o", "PrintMotd=no", "-o", f"ForceCommand={enter}",
        ], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    gate = _gate(clients, iid, sshd_port)
    access = Access(iid, gate.server_address[1], sshd_port, sshd, gate)
    _LIVE[iid] = access
    public = (host_key.with_suffix(".pub")).read_text().split()
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(host_key.with_suffix(".pub"))],
                                 capture_output=True, text=True).stdout.strip()
    CONSOLE[iid] = CONSOLE_TEMPLATE.format(fingerprint=fingerprint, key=" ".join(public[:2]), iid=iid)
    log.info("%s: sshd on 127.0.0.1:%s behind the security-group gate 127.0.0.1:%s (key pair %s)",
             iid, sshd_port, access.port, key_name)
    return access


def stop(instance_id: str, record: dict[str, Any]) -> None:
    """Stop the instance's gate and sshd (also from a record alone, after a daemon crash)."""
    access = _LIVE.pop(instance_id, None)
    CONSOLE.pop(instance_id, None)
    if access is not None:
        access.gate.shutdown()
        access.gate.server_close()
        with contextlib.suppress(Exception):
            access.sshd.terminate()
            access.sshd.wait(5)
        return
    pid = (record.get("ssh") or {}).get("sshd_pid")
    if pid and _is_our_sshd(int(pid)):
        with contextlib.suppress(OSError):
            os.kill(int(pid), 15)


def _is_our_sshd(pid: int) -> bool:
    try:
        return SSHD in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def allowed(permissions: list[dict[str, Any]], address: str, port: int = 22) -> bool:
    """Whether inbound rules admit TCP `port` from `address` (what an EC2 security group decides)."""
    ip = ipaddress.ip_address(address)
    for perm in permissions:
        protocol = str(perm.get("IpProtocol"))
        if protocol not in ("tcp", "6", "-1"):
            continue
        if protocol != "-1" and not int(perm.get("FromPort", -1)) <= port <= int(perm.get("ToPort", -1)):
            continue
        cidrs = [r["CidrIp"] for r in perm.get("IpRanges", [])] + [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
        if any(ip.version == ipaddress.ip_network(c, strict=False).version
               and ip in ipaddress.ip_network(c, strict=False) for c in cidrs):
            return True
    return False


def instance_permissions(clients: Any, instance_id: str) -> list[dict[str, Any]]:
    ec2 = clients("ec2")
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    if inst["State"]["Name"] != "running":
        return []
    groups = {g["GroupId"] for g in inst.get("SecurityGroups", [])}
    for eni in inst.get("NetworkInterfaces", []):
        groups |= {g["GroupId"] for g in eni.get("Groups", [])}
    if not groups:
        return []
    found = ec2.describe_security_groups(GroupIds=sorted(groups))["SecurityGroups"]
    return [perm for group in found for perm in group.get("IpPermissions", [])]


def _gate(clients: Any, instance_id: str, sshd_port: int) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            peer = self.client_address[0]
            try:
                permitted = allowed(instance_permissions(clients, instance_id), peer)
            except Exception:
                log.exception("%s: cannot read its security groups: connection refused", instance_id)
                permitted = False
            if not permitted:
                log.info("%s: TCP 22 from %s: no security-group rule admits it: dropped", instance_id, peer)
                return
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", sshd_port), timeout=10) as up:
                up.settimeout(None)
                self.request.settimeout(None)
                _splice(self.request, up)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"ssh-gate-{instance_id}", daemon=True).start()
    return server


def _splice(a: socket.socket, b: socket.socket) -> None:
    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ENTER = """#!/bin/sh
# sshd's ForceCommand: the session runs in the instance's simulated host, as a login on the instance would.
if [ -t 0 ]; then tty=-it; else tty=-i; fi
if [ -n "${SSH_ORIGINAL_COMMAND:-}" ]; then
  exec docker exec $tty CONTAINER /bin/bash -c "$SSH_ORIGINAL_COMMAND"
fi
exec docker exec $tty -e TERM="${TERM:-xterm}" CONTAINER /bin/bash -l
"""

# What cloud-init prints to the console on EC2 (the block `submitter ssh` reads host keys from).
CONSOLE_TEMPLATE = """Cloud-init v. submitter-sandbox running 'modules:final'.
ec2:
ec2: #############################################################
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: {fingerprint}
ec2: -----END SSH HOST KEY FINGERPRINTS-----
ec2: #############################################################
-----BEGIN SSH HOST KEY KEYS-----
{key} root@{iid}
-----END SSH HOST KEY KEYS-----
"""
