"""Where boto3 clients are made: a session for the account in the settings, or for an endpoint handed in.

Everything else receives an `Aws` and passes it to the adapters; nothing creates boto3 sessions on its own.
This package never asks the sandbox for its endpoint: the edge (`submitter.connect`) does and hands it in.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitter.errors import CredentialsError, SandboxError
from submitter.settings import Settings

ACCOUNTS_FILE = "accounts.json"  # under SUBMITTER_HOME: sha256(endpoint | access key id) -> account id


def _remembered(path: Path | None, key: str | None) -> str | None:
    if path is None or key is None:
        return None
    try:
        found = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) and found.isdigit() and len(found) == 12 else None


def _remember(path: Path, key: str, account: str) -> None:
    """Best effort: a read-only home only costs the next command an STS call."""
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
        known = known if isinstance(known, dict) else {}
        known[key] = account
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(known))
        os.replace(temporary, path)
    except (OSError, ValueError):
        pass


@dataclass(frozen=True)
class Endpoint:
    """An AWS API other than the real one (the local sandbox), with the credentials and names that go with it."""

    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    registry: str
    bucket: str


@dataclass
class Aws:
    """A boto3 session plus the endpoint (sandbox) and registry override that go with it."""

    session: Any
    region: str
    endpoint_url: str | None = None
    registry: str | None = None
    bucket: str | None = None
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _account: str | None = field(default=None, repr=False)
    accounts_file: Path | None = field(default=None, repr=False)  # access key -> account, remembered across runs
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def account(self) -> str:
        """The caller's account id: every S3 request names it as the bucket owner. Asked of STS once per access
        key and remembered (an access key id belongs to one account for good), so a command pays no STS round
        trip and no STS client start-up after the first; one lock, as S3 worker threads ask at once."""
        with self._lock:
            if self._account is None:
                key = self._key_digest()
                self._account = _remembered(self.accounts_file, key) or self._ask(key)
            return self._account

    def _key_digest(self) -> str | None:
        credentials = self.session.get_credentials()
        if credentials is None:
            return None
        text = f"{self.endpoint_url or 'aws'}|{credentials.access_key}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _ask(self, key: str | None) -> str:
        from submitter.aws import sts

        account = sts.identity(sts.client(self)).account
        if key and self.accounts_file:
            _remember(self.accounts_file, key, account)
        return account

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            # 32 connections: status and results read S3 from that many threads (S3 has no batch get).
            config = Config(retries={"max_attempts": 8, "mode": "adaptive"}, user_agent_extra="submitter",
                            max_pool_connections=32)
            self._clients[service] = self.session.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url, config=config
            )
        return self._clients[service]


def connect(settings: Settings, endpoint: Endpoint | None = None) -> Aws:
    """An Aws for these settings: the given endpoint and its credentials, else the usual AWS chain."""
    import boto3

    if endpoint is not None:
        session = boto3.Session(aws_access_key_id=endpoint.access_key_id,
                                aws_secret_access_key=endpoint.secret_access_key, region_name=endpoint.region)
        return Aws(session, endpoint.region, endpoint.endpoint_url, endpoint.registry,
                   settings.bucket or endpoint.bucket, accounts_file=settings.home / ACCOUNTS_FILE)
    if settings.sandbox:  # never fall through to a real account when the user asked for the sandbox
        raise SandboxError("AWS session", "sandbox mode, but no sandbox endpoint was handed in",
                           "connect through submitter.connect.aws(settings), which asks the sandbox for it")
    try:
        session = boto3.Session(profile_name=settings.profile, region_name=settings.region)
    except Exception as exc:  # botocore.exceptions.ProfileNotFound and kin
        raise CredentialsError(
            f"AWS profile {settings.profile!r}", str(exc), "check SUBMITTER_PROFILE / AWS_PROFILE and ~/.aws/config"
        ) from exc
    return Aws(session, settings.region, None, settings.registry, settings.bucket,
               accounts_file=settings.home / ACCOUNTS_FILE)


def has_credentials(settings: Settings) -> bool:
    """True when the AWS credential chain has credentials without asking an instance metadata service."""
    import botocore.session

    try:
        resolver = botocore.session.Session(profile=settings.profile).get_component("credential_provider")
        resolver.remove("iam-role")  # the instance metadata lookup can wait seconds off EC2
        return resolver.load_credentials() is not None
    except Exception:
        return False
