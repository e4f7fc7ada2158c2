"""SSM Parameter Store adapter: a submission's secrets, written as SecureString parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from submitter.aws.errors import translate

if TYPE_CHECKING:
    from submitter.aws.session import Aws


def client(aws: Aws) -> Any:
    return aws.client("ssm")


def put_secret(ssm: Any, name: str, value: str, description: str) -> None:
    """Write (or overwrite: a retried submit) one SecureString parameter."""
    with translate("ssm", "PutParameter", f"allow ssm:PutParameter on parameter{name.rsplit('/', 2)[0]}/*"):
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True, Description=description)
