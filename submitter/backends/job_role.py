"""The job role, pure: what the job container itself may reach in AWS (the spec's `permissions`), as a
per-submission role that only the submission's instance role may assume. No `permissions`: no job role, and the
container gets no AWS credentials at all (the instance role is never visible to it: IMDS hop limit 1)."""

from __future__ import annotations

from typing import Any

from submitter.backends import policy
from submitter.plan import Plan, fit, role_name

SUFFIX = "-job"  # submission ids end in hex, so no instance role name ends like this


def name(submission: str) -> str:
    return fit(f"submitter-{submission}{SUFFIX}", 64)


def arn(plan: Plan, role: str) -> str:
    return f"arn:aws:iam::{plan.account}:role/{role}"


def wanted(plan: Plan) -> bool:
    perms = plan.spec.permissions
    return bool(perms.s3_read or perms.s3_write)


def trust(plan: Plan) -> dict[str, Any]:
    """Only this submission's instance role (the agent, never the container) may assume the job role."""
    return policy.document([{
        "Effect": "Allow",
        "Principal": {"AWS": arn(plan, role_name(plan.submission_id))},
        "Action": "sts:AssumeRole",
    }])


def permissions_policy(plan: Plan) -> dict[str, Any]:
    """Exactly the spec's prefixes: list and read on s3_read and s3_write, write on s3_write."""
    perms = plan.spec.permissions
    readable = sorted(set(perms.s3_read) | set(perms.s3_write))
    statements: list[dict[str, Any]] = [{
        "Sid": "ReadDeclaredPrefixes",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": [_object_arn(uri) for uri in readable],
    }]
    by_bucket: dict[str, list[str]] = {}
    for uri in readable:
        bucket, key = _split(uri)
        by_bucket.setdefault(bucket, []).append(key + "*")
    for index, (bucket, keys) in enumerate(sorted(by_bucket.items())):
        # ListBucket is a bucket action: the s3:prefix condition is what keeps it to the declared prefixes.
        statements.append({
            "Sid": f"ListDeclaredPrefixes{index}",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": sorted(keys)}},
        })
    if perms.s3_write:
        statements.append({
            "Sid": "WriteDeclaredPrefixes",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [_object_arn(uri) for uri in sorted(perms.s3_write)],
        })
    return policy.document(statements)


def assume_statement(plan: Plan) -> dict[str, Any]:
    """The one statement the instance role needs for it: assume this submission's job role, no other."""
    return {
        "Sid": "AssumeJobRole",
        "Effect": "Allow",
        "Action": ["sts:AssumeRole"],
        "Resource": [arn(plan, name(plan.submission_id))],
    }


def describe(plan: Plan) -> dict[str, Any] | None:
    """The job role as --dry-run shows it and the backend creates it; None when the spec asks for nothing."""
    if not wanted(plan):
        return None
    role = name(plan.submission_id)
    return {"RoleName": role, "Arn": arn(plan, role), "AssumeRolePolicyDocument": trust(plan),
            "Policy": permissions_policy(plan)}


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _object_arn(uri: str) -> str:
    bucket, key = _split(uri)
    return f"arn:aws:s3:::{bucket}/{key}*"
