"""Host keys: an instance's key is checked against its console output (cloud-init prints them there), or
recorded on first use with a loud message and checked strictly afterwards; never accepted silently."""

from __future__ import annotations

import re
from pathlib import Path

from submitter.access.target import Say
from submitter.errors import RemoteError


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
