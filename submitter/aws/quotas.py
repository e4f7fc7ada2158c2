"""Service Quotas adapter: one quota's current value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from submitter.aws.errors import translate
from submitter.errors import AwsError

if TYPE_CHECKING:
    from submitter.aws.session import Aws


def client(aws: Aws) -> Any:
    return aws.client("service-quotas")


def value(quotas: Any, service: str, code: str) -> float:
    """The applied value of quota `code` of `service`. AwsError when it cannot be read; its code is
    'NotImplemented' where the API itself is missing (moto)."""
    try:
        with translate("service-quotas", "GetServiceQuota",
                       "allow servicequotas:GetServiceQuota, or look the quota up in the console"):
            return float(quotas.get_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]["Value"])
    except NotImplementedError as exc:
        raise AwsError("service-quotas", "GetServiceQuota", "NotImplemented", "the endpoint does not offer it") from exc
