"""Translate botocore errors into submitter.errors, with the IAM action or command to fix them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from submitter.errors import AwsError, CredentialsError

_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"}


@contextmanager
def translate(service: str, operation: str, next_step: str | None = None) -> Iterator[None]:
    """Run AWS calls; a ClientError or credentials problem becomes an AwsError/CredentialsError."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        hint = next_step
        if code in _DENIED and hint is None:
            hint = f"allow {service}:{operation} for your IAM identity (see `submitter doctor`)"
        raise AwsError(service, operation, code, str(error.get("Message", exc)), hint) from exc
    except NoCredentialsError as exc:
        raise CredentialsError("AWS credentials", "none found",
                               "run `aws configure`, set AWS_PROFILE, or use --sandbox") from exc
    except NoRegionError as exc:
        raise CredentialsError("AWS region", "none set", "set SUBMITTER_REGION or AWS_REGION") from exc
    except EndpointConnectionError as exc:
        raise AwsError(service, operation, "EndpointConnectionError", str(exc),
                       "check the network, or `submitter sandbox up` when using --sandbox") from exc
