"""The job container's only way into AWS: the standard container-credentials endpoint, serving the
submission's job role (the spec's `permissions`) and nothing else. Served by the agent on the docker bridge's
side of the host, on ECS's link-local address, with a random per-run token; the container gets
AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN, which every AWS SDK and the CLI read.

Why 169.254.170.2: the SDKs fetch a FULL_URI over plain http only from a loopback address or ECS's/EKS's
link-local hosts (botocore's ContainerMetadataFetcher._ALLOWED_HOSTS); the container's loopback is its own, so
the agent adds ECS's address to the host's docker bridge, which the container reaches through its gateway.
The instance role itself never reaches the container: IMDS hop limit 1, and `block_imds()` drops forwarded
traffic to IMDS (iptables, which the ECS-optimized Amazon Linux 2023 AMI carries for docker)."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from submitter.runtime.commands import run

log = logging.getLogger("submitter.runtime")

ADDRESS = "169.254.170.2"  # ECS's container-credentials address: an SDK-allowed http host
IMDS_ADDRESS = "169.254.169.254"
PATH = "/v1/credentials"
BRIDGE = "docker0"
REFRESH_MARGIN_S = 1200.0  # fresher than the SDKs' own 15-minute advisory refresh, so they get new keys
ROLE_SECONDS = 3600
FIELDS = ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")


def expiry(credentials: dict[str, str]) -> float:
    text = credentials["Expiration"].replace("Z", "+00:00")
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


class CredentialServer:
    """The endpoint for one run: `fetch()` gives the job role's credentials ({AccessKeyId, SecretAccessKey,
    Token, Expiration}); they are fetched on first use and again when less than `margin` seconds remain."""

    def __init__(self, fetch: Callable[[], dict[str, str]], address: str = ADDRESS, port: int = 0,
                 margin: float = REFRESH_MARGIN_S, clock: Callable[[], float] = time.time) -> None:
        self.fetch, self.margin, self.clock, self.address = fetch, margin, clock, address
        self.token = secrets.token_urlsafe(32)
        self._cached: dict[str, str] | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((address, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self._server.server_address[1]}{PATH}"

    def env(self) -> dict[str, str]:
        """What the container is given: the SDKs' standard variables."""
        return {"AWS_CONTAINER_CREDENTIALS_FULL_URI": self.url, "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.token}

    def start(self) -> CredentialServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="credentials", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() would wait forever for a loop that never ran
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def credentials(self) -> dict[str, str]:
        with self._lock:
            if self._cached is None or expiry(self._cached) - self.clock() < self.margin:
                fresh = self.fetch()
                self._cached = {k: str(fresh[k]) for k in FIELDS}
                log.info("job role credentials fetched (expire %s)", self._cached["Expiration"])
            return dict(self._cached)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                given = self.headers.get("Authorization") or ""
                if not hmac.compare_digest(given.encode(), server.token.encode()):
                    self._answer(401 if not given else 403, {"message": "a valid authorization token is required"})
                    return
                if self.path.split("?")[0] != PATH:
                    self._answer(404, {"message": "not found"})
                    return
                try:
                    self._answer(200, server.credentials())
                except Exception as exc:  # the SDK retries; the run's log says why
                    log.warning("job role credentials: %s", exc)
                    self._answer(500, {"message": "the job role's credentials are not available"})

            def _answer(self, code: int, doc: dict[str, Any]) -> None:
                answer_json(self, code, doc)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                pass  # requests carry the token in a header only; nothing worth a line per request

        return Handler


def answer_json(handler: BaseHTTPRequestHandler, code: int, doc: dict[str, Any]) -> None:
    """A credentials endpoint's answer, as the SDKs read it (also the sandbox's stand-in for ECS's endpoint)."""
    body = json.dumps(doc).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def session_name(run_id: str) -> str:
    """STS's RoleSessionName (<= 64 of [\\w+=,.@-]): CloudTrail shows which run used the job role."""
    return ("submitter-" + run_id)[:64]


def bridge_name() -> str:
    result = run(["docker", "network", "inspect", "bridge", "--format",
                  '{{index .Options "com.docker.network.bridge.name"}}'], timeout=60)
    name = result.out.strip() if result.code == 0 else ""
    return name or BRIDGE


def add_address(bridge: str, address: str = ADDRESS) -> None:
    """ECS's link-local address on the docker bridge, so containers reach the endpoint (idempotent)."""
    result = run(["ip", "address", "add", f"{address}/32", "dev", bridge], timeout=30)
    if result.code != 0 and "File exists" not in result.err:
        raise OSError(f"cannot add {address} to {bridge}: {result.last_line()}")


def block_imds() -> bool:
    """Drop forwarded traffic to IMDS: no container on this host reaches it, whatever the hop limit. The host's
    own requests are not forwarded, so the agent keeps IMDS. False (with a warning) when iptables is missing."""
    rule = ["FORWARD", "--destination", f"{IMDS_ADDRESS}/32", "--jump", "DROP"]
    if run(["iptables", "--check", *rule], timeout=30).code == 0:
        return True
    result = run(["iptables", "--insert", *rule], timeout=30)
    if result.code != 0:
        log.warning("could not block IMDS from containers (iptables: %s); the hop limit of 1 still does",
                    result.last_line())
        return False
    log.info("forwarded traffic to IMDS dropped: containers cannot reach the instance role")
    return True


def serve(fetch: Callable[[], dict[str, str]]) -> CredentialServer:
    """A started endpoint for one run on the bridge side of this host (the address added on first use)."""
    try:
        server = CredentialServer(fetch)
    except OSError:  # EADDRNOTAVAIL: not on this host yet (the sandbox adds it for its hosts, which have no `ip`)
        add_address(bridge_name())
        server = CredentialServer(fetch)
    return server.start()
