"""ECS's task-credentials endpoint for the sandbox's Batch jobs (submitter/sandbox/batch.py): what the ECS agent
gives a task for its role, served on loopback (Batch's ECS-EC2 jobs share the host's network) as
AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN, which the SDKs and the CLI read."""

from __future__ import annotations

import fnmatch
import hmac
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from submitter.runtime.credentials import answer_json

log = logging.getLogger("submitter.sandbox.batch")

CREDENTIALS_S = 3600
REFRESH_BEFORE_S = 15 * 60  # renewed well before expiry, as ECS does
ECS_TASKS = "ecs-tasks.amazonaws.com"
PATH = "/v1/credentials"


@dataclass
class _Grant:
    account: str
    role_arn: str
    session: str
    issued: dict[str, str] | None = None


def trusts_ecs_tasks(document: str | dict[str, Any]) -> bool:
    """Whether a trust policy lets ECS tasks assume the role (what ECS needs to hand a task its credentials)."""
    doc = json.loads(document) if isinstance(document, str) else document
    statements = doc.get("Statement") or []
    for statement in [statements] if isinstance(statements, dict) else statements:
        actions = statement.get("Action") or []
        actions = [actions] if isinstance(actions, str) else actions
        principal = statement.get("Principal") or {}
        services = principal.get("Service") if isinstance(principal, dict) else None
        services = [services] if isinstance(services, str) else services or []
        if (statement.get("Effect") == "Allow" and ECS_TASKS in services
                and any(fnmatch.fnmatchcase("sts:AssumeRole", a) for a in actions)):
            return True
    return False


class JobCredentials:
    """ECS's task-credentials endpoint for the sandbox's Batch jobs, on loopback: one random token per running
    job, answered with STS credentials of that job's role (issued in-process, as ECS does on the task's behalf:
    no caller needs sts:AssumeRole), renewed `REFRESH_BEFORE_S` before they expire."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._grants: dict[str, _Grant] = {}  # token -> grant
        self._tokens: dict[str, str] = {}  # job id -> token
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{PATH}"

    def start(self) -> JobCredentials:
        self._thread = threading.Thread(target=self._server.serve_forever, name="batch-credentials", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def grant(self, job_id: str, account: str, role_arn: str) -> dict[str, str]:
        """The variables a job's container gets for its role (AWS SDKs and the CLI read them)."""
        token = secrets.token_urlsafe(32)
        session = job_id.replace(":", "-")[:64]  # ECS names the session after the task; ':' is not allowed
        with self._lock:
            old = self._tokens.pop(job_id, None)
            if old:
                self._grants.pop(old, None)
            self._grants[token] = _Grant(account, role_arn, session)
            self._tokens[job_id] = token
        return {"AWS_CONTAINER_CREDENTIALS_FULL_URI": self.url, "AWS_CONTAINER_AUTHORIZATION_TOKEN": token}

    def revoke(self, job_id: str) -> None:
        with self._lock:
            token = self._tokens.pop(job_id, None)
            if token:
                self._grants.pop(token, None)

    def credentials(self, token: str) -> dict[str, str] | None:
        """The credentials for a token, None for an unknown (or revoked) one. Raises PermissionError when the
        role does not exist or does not trust ECS tasks."""
        with self._lock:
            grant = next((g for t, g in self._grants.items() if hmac.compare_digest(t, token)), None)
        if grant is None:
            return None
        now = datetime.now(timezone.utc)
        if grant.issued is None or (datetime.fromisoformat(grant.issued["Expiration"].replace("Z", "+00:00"))
                                    - now < timedelta(seconds=REFRESH_BEFORE_S)):
            grant.issued = self._issue(grant, now)
        return dict(grant.issued)

    def _issue(self, grant: _Grant, now: datetime) -> dict[str, str]:
        from moto.iam.exceptions import NotFoundException
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        try:
            role = iam_backends[grant.account]["aws"].get_role_by_arn(grant.role_arn)
        except NotFoundException:
            raise PermissionError(f"the job role {grant.role_arn} does not exist") from None
        if not trusts_ecs_tasks(role.assume_role_policy_document):
            raise PermissionError(f"the job role {grant.role_arn} does not trust {ECS_TASKS}")
        assumed = sts_backends[grant.account]["aws"].assume_role(
            region_name=self.region, role_session_name=grant.session, role_arn=grant.role_arn, policy="",
            duration=CREDENTIALS_S, external_id="")
        log.info("batch job %s: issued credentials of %s (%s)", grant.session, grant.role_arn, assumed.access_key_id)
        expiration = (now + timedelta(seconds=CREDENTIALS_S)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"AccessKeyId": assumed.access_key_id, "SecretAccessKey": assumed.secret_access_key,
                "Token": assumed.session_token, "Expiration": expiration, "RoleArn": grant.role_arn}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != PATH:
                    self._answer(404, {"message": "not found"})
                    return
                try:
                    found = endpoint.credentials(self.headers.get("Authorization") or "")
                except PermissionError as exc:
                    log.warning("batch job credentials refused: %s", exc)
                    self._answer(500, {"message": str(exc)})
                    return
                if found is None:
                    self._answer(403, {"message": "a valid authorization token is required"})
                else:
                    self._answer(200, found)

            def _answer(self, code: int, doc: dict[str, Any]) -> None:
                answer_json(self, code, doc)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                pass

        return Handler
