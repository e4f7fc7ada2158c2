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


def tag_secret(ssm: Any, name: str, tags: dict[str, str]) -> None:
    """Tag one parameter (PutParameter refuses Tags together with Overwrite, so tagging is its own call)."""
    with translate("ssm", "AddTagsToResource", f"allow ssm:AddTagsToResource on parameter{name.rsplit('/', 2)[0]}/*"):
        ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=name,
                                 Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


def secrets_under(ssm: Any, path: str, recursive: bool = False) -> list[str]:
    """Names of the parameters under `path` (no values are read)."""
    names: list[str] = []
    option = "Recursive" if recursive else "OneLevel"
    with translate("ssm", "DescribeParameters"):
        pages = ssm.get_paginator("describe_parameters").paginate(
            ParameterFilters=[{"Key": "Path", "Option": option, "Values": [path.rstrip("/") or "/"]}])
        for page in pages:
            names += [str(p["Name"]) for p in page["Parameters"]]
    return names


def secret_tags(ssm: Any, name: str) -> dict[str, str]:
    with translate("ssm", "ListTagsForResource"):
        found = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"]
    return {str(t["Key"]): str(t["Value"]) for t in found}


def delete_secrets(ssm: Any, names: list[str]) -> list[str]:
    """Delete parameters (DeleteParameters takes 10 at a time); returns those deleted."""
    deleted: list[str] = []
    with translate("ssm", "DeleteParameters"):
        for start in range(0, len(names), 10):
            deleted += ssm.delete_parameters(Names=names[start:start + 10])["DeletedParameters"]
    return deleted
