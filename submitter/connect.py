"""Where this invocation's AWS calls go: the account in the settings, or the local sandbox's endpoint.

The one place that asks the sandbox for its endpoint and hands it to the session factory, so `aws/` never
imports the sandbox. Commands and the planner call these instead of `aws.session` directly.
"""

from __future__ import annotations

from dataclasses import replace

from submitter.aws.session import Aws, Endpoint
from submitter.errors import SubmitterError
from submitter.settings import Settings


def endpoint(settings: Settings) -> Endpoint | None:
    """The sandbox's endpoint in sandbox mode (SandboxError when it is not running), else None (real AWS)."""
    if not settings.sandbox:
        return None
    from submitter.sandbox import api

    return api.connection(settings)


def aws(settings: Settings) -> Aws:
    """An Aws for these settings, pointed at the sandbox in sandbox mode."""
    from submitter.aws import session

    return session.connect(settings, endpoint(settings))


def has_credentials(settings: Settings) -> bool:
    """True when a call could be signed now without waiting on the network (sandbox: when it is running)."""
    if settings.sandbox:
        try:
            endpoint(settings)
        except SubmitterError:
            return False
        return True
    from submitter.aws import session

    return session.has_credentials(settings)


def resolve(settings: Settings) -> Settings:
    """In sandbox mode the sandbox's bucket, registry and region replace any AWS ones (from .env, say).

    When the sandbox is down the settings stay as they are: a dry run still works, and the first real
    call reports the sandbox as not running."""
    try:
        found = endpoint(settings)
    except SubmitterError:
        return settings
    if found is None:
        return settings
    return replace(settings, region=found.region, registry=found.registry, bucket=found.bucket)
