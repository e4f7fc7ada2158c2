"""Where boto3 clients are made: a session for the account in the settings, or for an endpoint handed in.

Everything else receives an `Aws` and passes it to the adapters; nothing creates boto3 sessions on its own.
This package never asks the sandbox for its endpoint: the edge (`submitter.connect`) does and hands it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from submitter.errors import CredentialsError, SandboxError
from submitter.settings import Settings


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

    def account(self) -> str:
        """The caller's account id, asked of STS once per session: every S3 request names it as the bucket owner."""
        if self._account is None:
            from submitter.aws import sts

            self._account = sts.identity(sts.client(self)).account
        return self._account

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
                   settings.bucket or endpoint.bucket)
    if settings.sandbox:  # never fall through to a real account when the user asked for the sandbox
        raise SandboxError("AWS session", "sandbox mode, but no sandbox endpoint was handed in",
                           "connect through submitter.connect.aws(settings), which asks the sandbox for it")
    try:
        session = boto3.Session(profile_name=settings.profile, region_name=settings.region)
    except Exception as exc:  # botocore.exceptions.ProfileNotFound and kin
        raise CredentialsError(
            f"AWS profile {settings.profile!r}", str(exc), "check SUBMITTER_PROFILE / AWS_PROFILE and ~/.aws/config"
        ) from exc
    return Aws(session, settings.region, None, settings.registry, settings.bucket)


def has_credentials(settings: Settings) -> bool:
    """True when the AWS credential chain has credentials without asking an instance metadata service."""
    import botocore.session

    try:
        resolver = botocore.session.Session(profile=settings.profile).get_component("credential_provider")
        resolver.remove("iam-role")  # the instance metadata lookup can wait seconds off EC2
        return resolver.load_credentials() is not None
    except Exception:
        return False
