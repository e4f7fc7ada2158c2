"""An IMDSv2 emulator for one sandbox instance: what 169.254.169.254 answers on EC2, on a loopback port.

IMDSv2 only, as the project's launch templates require (HttpTokens=required): a GET without a valid
token answers 401. The spot interruption notice and rebalance recommendation are set by the daemon.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_TTL = 21600


@dataclass
class InstanceMeta:
    """The facts an instance's metadata service reports."""

    instance_id: str
    instance_type: str
    availability_zone: str
    region: str
    account_id: str
    image_id: str = ""
    private_ip: str = "10.0.0.10"
    role_name: str | None = None
    user_data: bytes = b""
    lifecycle: str = "on-demand"


@dataclass
class Notices:
    """Mutable notices the daemon sets: spot/instance-action and the rebalance recommendation."""

    instance_action: dict[str, str] | None = None
    rebalance: dict[str, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Imds:
    """One instance's metadata service on 127.0.0.1 (ephemeral port unless given)."""

    def __init__(self, meta: InstanceMeta, port: int = 0,
                 credentials: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.meta = meta
        self.notices = Notices()
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        # `credentials(role)`: that role's STS credentials (the daemon's, iam.RoleCredentials), so the host acts
        # as its instance role under the sandbox's IAM enforcement. Without it, fixed keys (tests of IMDS).
        self._credentials = credentials
        self._key_id = "ASIA" + secrets.token_hex(8).upper()
        self._secret = secrets.token_urlsafe(30)
        self._session = secrets.token_urlsafe(60)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> Imds:
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"imds-{self.meta.instance_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever: only if it was started
            self._server.shutdown()
        self._server.server_close()

    def set_instance_action(self, action: str, at: datetime) -> None:
        with self.notices.lock:
            self.notices.instance_action = {"action": action, "time": _iso(at)}

    def set_rebalance(self, at: datetime) -> None:
        with self.notices.lock:
            self.notices.rebalance = {"noticeTime": _iso(at)}

    # ----------------------------------------------------------------------------------------- content

    def issue_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(40)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
        return token

    def token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and expiry > time.monotonic()

    def lookup(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path` with a valid token."""
        text = "text/plain"
        if path in ("/latest/user-data", "/latest/user-data/"):
            if not self.meta.user_data:
                return 404, text, b""
            return 200, "application/octet-stream", self.meta.user_data
        if path.rstrip("/") == "/latest/dynamic/instance-identity/document":
            return 200, "application/json", json.dumps(self.identity(), indent=2).encode()
        tree = self.tree()
        key = path.rstrip("/")
        if key in tree:
            value = tree[key]
            kind = "application/json" if value.startswith("{") else text
            return 200, kind, value.encode()
        # A directory: list its children, as IMDS does (sub-directories end with "/").
        prefix = key + "/"
        children: list[str] = []
        for name in tree:
            if name.startswith(prefix):
                rest = name[len(prefix):]
                child = rest.split("/", 1)[0] + ("/" if "/" in rest else "")
                if child not in children:
                    children.append(child)
        if children:
            return 200, text, "\n".join(children).encode()
        return 404, text, b""

    def tree(self) -> dict[str, str]:
        m = self.meta
        base = "/latest/meta-data"
        now = datetime.now(timezone.utc)
        tree = {
            f"{base}/ami-id": m.image_id,
            f"{base}/instance-id": m.instance_id,
            f"{base}/instance-type": m.instance_type,
            f"{base}/instance-life-cycle": m.lifecycle,
            f"{base}/local-ipv4": m.private_ip,
            f"{base}/hostname": f"ip-{m.private_ip.replace('.', '-')}.ec2.internal",
            f"{base}/local-hostname": f"ip-{m.private_ip.replace('.', '-')}.ec2.internal",
            f"{base}/placement/availability-zone": m.availability_zone,
            f"{base}/placement/region": m.region,
            f"{base}/services/domain": "amazonaws.com",
            f"{base}/services/partition": "aws",
        }
        if m.role_name:
            tree[f"{base}/iam/info"] = json.dumps({
                "Code": "Success", "LastUpdated": _iso(now),
                "InstanceProfileArn": f"arn:aws:iam::{m.account_id}:instance-profile/{m.role_name}",
                "InstanceProfileId": "AIPA" + m.instance_id[2:].upper(),
            })
            tree[f"{base}/iam/security-credentials/{m.role_name}"] = json.dumps(self._role_credentials(now))
        with self.notices.lock:
            if self.notices.instance_action:
                tree[f"{base}/spot/instance-action"] = json.dumps(self.notices.instance_action)
                tree[f"{base}/spot/termination-time"] = self.notices.instance_action["time"]
            if self.notices.rebalance:
                tree[f"{base}/events/recommendations/rebalance"] = json.dumps(self.notices.rebalance)
        return tree

    def _role_credentials(self, now: datetime) -> dict[str, Any]:
        if self._credentials is None:
            return {"Code": "Success", "LastUpdated": _iso(now), "Type": "AWS-HMAC",
                    "AccessKeyId": self._key_id, "SecretAccessKey": self._secret, "Token": self._session,
                    "Expiration": _iso(now + timedelta(hours=12))}
        assert self.meta.role_name
        try:
            issued = self._credentials(self.meta.role_name)
        except Exception as exc:  # what EC2 answers when it cannot get the role's credentials
            return {"Code": "AssumeRoleUnauthorizedAccess", "Message": str(exc), "LastUpdated": _iso(now)}
        return {"Code": "Success", "LastUpdated": _iso(issued["LastUpdated"]), "Type": "AWS-HMAC",
                "AccessKeyId": issued["AccessKeyId"], "SecretAccessKey": issued["SecretAccessKey"],
                "Token": issued["Token"], "Expiration": _iso(issued["expiration"])}

    def identity(self) -> dict[str, Any]:
        m = self.meta
        return {
            "accountId": m.account_id, "architecture": "x86_64", "availabilityZone": m.availability_zone,
            "imageId": m.image_id, "instanceId": m.instance_id, "instanceType": m.instance_type,
            "pendingTime": _iso(datetime.now(timezone.utc)), "privateIp": m.private_ip,
            "region": m.region, "version": "2017-09-30",
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "EC2ws"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
                pass  # the daemon log would fill with polling; errors surface in the boot log

            def _send(self, status: int, body: bytes = b"", kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_PUT(self) -> None:
                if self.path.split("?")[0] != "/latest/api/token":
                    self._send(403 if self.path.startswith("/latest/") else 404)
                    return
                if self.headers.get("X-Forwarded-For"):
                    self._send(403)  # IMDS refuses tokens requested through a proxy
                    return
                raw = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if not raw.isdigit() or not 1 <= int(raw) <= MAX_TTL:
                    self._send(400)
                    return
                ttl = int(raw)
                token = imds.issue_token(ttl)
                self.send_response(200)
                self.send_header("X-aws-ec2-metadata-token-ttl-seconds", str(ttl))
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(token)))
                self.end_headers()
                self.wfile.write(token.encode())

            def do_GET(self) -> None:
                if not imds.token_valid(self.headers.get("X-aws-ec2-metadata-token")):
                    self._send(401)
                    return
                status, kind, body = imds.lookup(self.path.split("?")[0])
                self._send(status, body, kind)

            do_HEAD = do_GET

        return Handler
