"""IAM adapter: every role submitter creates (a submission's instance or job role, Batch's service-linked role,
the Batch container hosts' role), their inline policy and instance profiles, and their removal."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from submitter.aws.errors import translate
from submitter.errors import AwsError

if TYPE_CHECKING:
    from submitter.aws.session import Aws

POLICY_NAME = "submitter-run"
EC2 = "ec2.amazonaws.com"
BATCH = "batch.amazonaws.com"
PROFILE_WAIT_S = 60


def client(aws: Aws) -> Any:
    return aws.client("iam")


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def trust(service: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}


def ensure_role(iam: Any, name: str, service: str, description: str, tags: dict[str, str],
                policy: dict[str, Any] | None = None, managed: tuple[str, ...] = (),
                trust_policy: dict[str, Any] | None = None) -> str:
    """Role `name` assumable by `service` (or as `trust_policy` says), with an inline `policy` and `managed`
    policies; returns its ARN. Idempotent: an existing role gets the policies rewritten (a retried submit, a
    changed scope)."""
    from botocore.exceptions import ClientError

    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    assume = json.dumps(trust_policy or trust(service))
    with translate("iam", "CreateRole"):
        try:
            arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=assume, Tags=tag_list,
                                  Description=description)["Role"]["Arn"]
        except ClientError as exc:
            if _code(exc) != "EntityAlreadyExists":
                raise
            arn = iam.get_role(RoleName=name)["Role"]["Arn"]
            if trust_policy is not None:  # who may assume it is part of the scope, like the policy
                iam.update_assume_role_policy(RoleName=name, PolicyDocument=assume)
    if policy is not None:
        with translate("iam", "PutRolePolicy"):
            iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
    for policy_arn in managed:
        with translate("iam", "AttachRolePolicy"):
            iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
    return str(arn)


def ensure_instance_profile(iam: Any, name: str, tags: dict[str, str]) -> str:
    """Instance profile `name` holding role `name`; returns the profile ARN."""
    from botocore.exceptions import ClientError

    with translate("iam", "CreateInstanceProfile"):
        try:
            iam.create_instance_profile(InstanceProfileName=name,
                                        Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        except ClientError as exc:
            if _code(exc) != "EntityAlreadyExists":
                raise
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        if not any(r["RoleName"] == name for r in profile.get("Roles", [])):
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return str(profile["Arn"])


def ensure_instance_role(iam: Any, name: str, policy: dict[str, Any], tags: dict[str, str]) -> str:
    """Role + inline policy + instance profile named `name` for EC2 hosts; returns the profile ARN. Idempotent."""
    ensure_role(iam, name, EC2, "submitter: one submission's workers", tags, policy=policy)
    return ensure_instance_profile(iam, name, tags)


def wait_instance_profile(iam: Any, name: str, wait_s: int = PROFILE_WAIT_S) -> None:
    # IAM is eventually consistent: EC2 may not see a new profile for some seconds. A group retries failed
    # launches by itself, but waiting here turns a slow start into a prompt one.
    with translate("iam", "GetInstanceProfile"):
        iam.get_waiter("instance_profile_exists").wait(
            InstanceProfileName=name, WaiterConfig={"Delay": 1, "MaxAttempts": wait_s})


def ensure_service_linked_role(iam: Any, service: str = BATCH) -> str:
    """The ARN of `service`'s service-linked role, created when the account has none yet."""
    from botocore.exceptions import ClientError

    with translate("iam", "CreateServiceLinkedRole"):
        try:
            return str(iam.create_service_linked_role(AWSServiceName=service)["Role"]["Arn"])
        except ClientError as exc:
            # AWS says InvalidInput ("has been taken"); either way the role is there already.
            if _code(exc) not in ("InvalidInput", "EntityAlreadyExists"):
                raise
        for page in iam.get_paginator("list_roles").paginate(PathPrefix=f"/aws-service-role/{service}/"):
            for role in page["Roles"]:
                return str(role["Arn"])
    raise AwsError("iam", "ListRoles", "NoSuchEntity", f"no service-linked role for {service}",
                   f"create it once: aws iam create-service-linked-role --aws-service-name {service}")


def delete_instance_role(iam: Any, name: str) -> bool:
    """Remove role `name` with its inline policy and its instance profile (when it has one); False: no such role."""
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
                if _code(exc) != "NoSuchEntity":
                    raise
        for attempt in range(5):  # the profile detaches from terminated instances with a delay
            try:
                iam.delete_role(RoleName=name)
                break
            except ClientError as exc:
                if _code(exc) != "DeleteConflict" or attempt == 4:
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
