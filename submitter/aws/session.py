"""Where boto3 clients are made: from Settings, pointed at AWS or at the local sandbox.

Everything else receives an `Aws` and asks it for clients; nothing creates boto3 sessions on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from submitter.errors import CredentialsError
from submitter.settings import Settings


@dataclass
class Aws:
    """A boto3 session plus the endpoint (sandbox) and registry override that go with it."""

    session: Any
    region: str
    endpoint_url: str | None = None
    registry: str | None = None
    bucket: str | None = None
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

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


def connect(settings: Settings) -> Aws:
    """An Aws for these settings. In sandbox mode, credentials and endpoints come from the sandbox."""
    import boto3

    if settings.sandbox:
        from submitter.sandbox import api

        conn = api.connection(settings)
        session = boto3.Session(
            aws_access_key_id=conn.access_key_id,
            aws_secret_access_key=conn.secret_access_key,
            region_name=conn.region,
        )
        return Aws(session, conn.region, conn.endpoint_url, conn.registry, settings.bucket or conn.bucket)
    try:
        session = boto3.Session(profile_name=settings.profile, region_name=settings.region)
    except Exception as exc:  # botocore.exceptions.ProfileNotFound and kin
        raise CredentialsError(
            f"AWS profile {settings.profile!r}", str(exc), "check SUBMITTER_PROFILE / AWS_PROFILE and ~/.aws/config"
        ) from exc
    return Aws(session, settings.region, None, settings.registry, settings.bucket)


def has_credentials(settings: Settings) -> bool:
    """True when credentials are at hand without asking an instance metadata service (no network wait)."""

    if settings.sandbox:
        from submitter.sandbox import api

        try:
            api.connection(settings)
        except Exception:
            return False
        return True
    import botocore.session

    try:
        resolver = botocore.session.Session(profile=settings.profile).get_component("credential_provider")
        resolver.remove("iam-role")  # the instance metadata lookup can wait seconds off EC2
        return resolver.load_credentials() is not None
    except Exception:
        return False


def resolve(settings: Settings) -> Settings:
    """In sandbox mode the sandbox's bucket, registry and region replace any AWS ones (from .env, say).

    When the sandbox is down the settings stay as they are: a dry run still works, and the first real
    call reports the sandbox as not running."""
    if not settings.sandbox:
        return settings
    from dataclasses import replace

    from submitter.errors import SubmitterError
    from submitter.sandbox import api

    try:
        conn = api.connection(settings)
    except SubmitterError:
        return settings
    return replace(settings, region=conn.region, registry=conn.registry, bucket=conn.bucket)
