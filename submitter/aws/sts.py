"""STS adapter: who the credentials belong to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from submitter.aws.errors import translate

if TYPE_CHECKING:
    from submitter.aws.session import Aws


@dataclass(frozen=True)
class Identity:
    account: str
    arn: str


def client(aws: Aws) -> Any:
    return aws.client("sts")


def identity(sts: Any) -> Identity:
    """The caller's account id and ARN (GetCallerIdentity needs no permission: it proves the credentials work)."""
    with translate("sts", "GetCallerIdentity"):
        found = sts.get_caller_identity()
    return Identity(str(found["Account"]), str(found["Arn"]))
