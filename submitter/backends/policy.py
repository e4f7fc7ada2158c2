"""What a run may reach, whichever backend runs it: its submission's S3 keys, the staged inputs, its secrets,
S3 inputs it names, and spot prices (the runtime prices its attempts). Backends add what their hosts need."""

from __future__ import annotations

from typing import Any

from submitter import contract
from submitter.plan import Plan

VERSION = "2012-10-17"
STORAGE = ("OwnRunObjects", "StagedInputs", "ListOwnPrefixes")  # the S3 statements, listed first


def run_statements(plan: Plan) -> list[dict[str, Any]]:
    layout, bucket, sub = plan.layout, plan.bucket_or_placeholder, plan.submission_id
    own = [layout.runs + sub + "*", layout.submission(sub) + "*"]
    inputs = layout.inputs + "*"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OwnRunObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in own],
        },
        {
            "Sid": "StagedInputs",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{inputs}"],
        },
        {
            "Sid": "ListOwnPrefixes",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": [*own, inputs]}},
        },
        {
            "Sid": "ReadSpotPrice",
            "Effect": "Allow",
            "Action": ["ec2:DescribeSpotPriceHistory"],
            "Resource": ["*"],  # read-only, no resource-level scoping exists
        },
    ]
    if plan.spec.secrets:
        statements.append({
            "Sid": "OwnSecrets",
            "Effect": "Allow",
            "Action": ["ssm:GetParameters", "ssm:GetParameter"],
            "Resource": [f"arn:aws:ssm:{plan.region}:{plan.account}:parameter"
                         f"{contract.secrets_prefix(sub)}*"],
        })
    s3_inputs = sorted({i.source for i in plan.spec.inputs if i.source.startswith("s3://")})
    if s3_inputs:
        statements.append({
            "Sid": "ReadS3Inputs",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": sorted({arn for uri in s3_inputs for arn in _s3_arns(uri)}),
        })
    return statements


def document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": VERSION, "Statement": statements}


def _s3_arns(uri: str) -> list[str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{key}*"]
