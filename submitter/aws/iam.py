"""IAM adapter: the per-submission instance role, its scoped inline policy and instance profile."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from submitter.aws.errors import translate
from submitter.errors import AwsError

if TYPE_CHECKING:
    from submitter.aws.session import Aws

TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
POLICY_NAME = "submitter-run"


def client(aws: Aws) -> Any:
    return aws.client("iam")


def ensure_instance_role(iam: Any, name: str, policy: dict[str, Any], tags: dict[str, str]) -> str:
    """Role + inline policy + instance profile named `name`; returns the profile ARN. Idempotent."""
    from botocore.exceptions import ClientError

    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    with translate("iam", "CreateRole"):
        try:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST), Tags=tag_list,
                            Description="submitter: one submission's workers")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "EntityAlreadyExists":
                raise
    with translate("iam", "PutRolePolicy"):
        iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
    with translate("iam", "CreateInstanceProfile"):
        try:
            iam.create_instance_profile(InstanceProfileName=name, Tags=tag_list)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "EntityAlreadyExists":
                raise
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        if not any(r["RoleName"] == name for r in profile.get("Roles", [])):
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return str(profile["Arn"])


def delete_instance_role(iam: Any, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        iam.get_role(RoleName=name)
    except ClientError:
        return False
    with translate("iam", "DeleteRole"):
        for call in (lambda: iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name),
                     lambda: iam.delete_instance_profile(InstanceProfileName=name),
                     lambda: iam.delete_role_policy(RoleName=name, PolicyName=POLICY_NAME)):
            try:
                call()
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "NoSuchEntity":
                    raise
        for attempt in range(5):  # the profile detaches from terminated instances with a delay
            try:
                iam.delete_role(RoleName=name)
                break
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "DeleteConflict" or attempt == 4:
                    raise
                time.sleep(2)
    return True


def tagged_roles(iam: Any, name_prefix: str, tag: str) -> list[tuple[str, dict[str, str]]]:
    """(name, tags) of the roles named `name_prefix`... that carry the tag key `tag`."""
    found = []
    with translate("iam", "ListRoles"):
        for page in iam.get_paginator("list_roles").paginate():
            for role in page["Roles"]:
                if not role["RoleName"].startswith(name_prefix):
                    continue
                tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role["RoleName"]).get("Tags", [])}
                if tag in tags:
                    found.append((role["RoleName"], tags))
    return found


def denied_actions(iam: Any, principal_arn: str, actions: list[str]) -> list[str]:
    """The `actions` the principal's policies do not allow (policy simulation), sorted. AwsError when the
    simulation cannot run; its code is 'NotImplemented' where the API itself is missing (moto)."""
    try:
        with translate("iam", "SimulatePrincipalPolicy"):
            results = iam.simulate_principal_policy(PolicySourceArn=principal_arn,
                                                    ActionNames=actions)["EvaluationResults"]
    except NotImplementedError as exc:
        raise AwsError("iam", "SimulatePrincipalPolicy", "NotImplemented", "the endpoint does not offer it") from exc
    return sorted(r["EvalActionName"] for r in results if r.get("EvalDecision") != "allowed")
