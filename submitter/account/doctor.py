"""`submitter doctor`: check credentials, region, permissions, spot vCPU quotas, bucket, repository, ssh key
and docker, and name the fix for each failure. Only reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from submitter.account.init import PUBLIC_ACCESS_BLOCK
from submitter.aws import ec2 as ec2_api
from submitter.aws import iam as iam_api
from submitter.aws import quotas as quotas_api
from submitter.aws import s3 as s3_api
from submitter.aws import sts
from submitter.aws.session import Aws
from submitter.errors import AwsError, SettingsError
from submitter.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


# What submit, status, ssh and cleanup call, for the permission check (policy simulation).
ACTIONS = [
    "sts:GetCallerIdentity", "s3:PutObject", "s3:GetObject", "s3:ListBucket", "ecr:GetAuthorizationToken",
    "ecr:DescribeImages", "ecr:CreateRepository", "ecr:PutImage", "ecr:InitiateLayerUpload",
    "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets", "ec2:CreateLaunchTemplate", "ec2:DeleteLaunchTemplate",
    "ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress", "ec2:DescribeInstances", "ec2:GetConsoleOutput", "ec2:RunInstances",
    "ec2:CreateTags", "autoscaling:CreateAutoScalingGroup", "autoscaling:DeleteAutoScalingGroup",
    "autoscaling:DescribeAutoScalingGroups", "iam:CreateRole", "iam:PutRolePolicy", "iam:CreateInstanceProfile",
    "iam:AddRoleToInstanceProfile", "iam:PassRole", "iam:DeleteRole", "sqs:CreateQueue", "sqs:SendMessage",
    "sqs:DeleteQueue", "ssm:PutParameter", "ssm:GetParameter",
    # issue 14: ssh sessions' own groups; secrets' tags and removal
    "ec2:ModifyInstanceAttribute", "ssm:AddTagsToResource", "ssm:DescribeParameters", "ssm:ListTagsForResource",
    "ssm:DeleteParameters",
]
# Spot vCPU quotas (Service Quotas, service ec2) by instance family initial.
SPOT_QUOTAS = {
    "standard": ("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
    "g": ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    "p": ("L-7212CCBC", "All P Spot Instance Requests"),
    "inf": ("L-B5D1601B", "All Inf Spot Instance Requests"),
    "trn": ("L-6B0D517C", "All Trn Spot Instance Requests"),
    "x": ("L-E3A00192", "All X Spot Instance Requests"),
    "f": ("L-88CF9481", "All F Spot Instance Requests"),
    "dl": ("L-85EED4F7", "All DL Spot Instance Requests"),
}


def quota_family(instance_type: str) -> str:
    family = instance_type.split(".")[0]
    for prefix in ("inf", "trn", "dl", "g", "p", "x", "f"):
        if family.startswith(prefix) and (prefix != "g" or not family.startswith("gr")):
            return prefix
    return "standard"


def doctor(settings: Settings, aws: Aws | None, instance_types: list[str],
           engine: Callable[[], Any] | None) -> list[Check]:
    """Every check, in order; a failed check never stops the ones after it."""
    checks = [Check("settings", True, f"region {settings.region}, bucket {settings.bucket or '(none)'}, "
                                      f"repository {settings.ecr_repository}, home {settings.home}")]
    if not settings.bucket:
        checks.append(Check("bucket setting", False, "SUBMITTER_BUCKET is not set",
                            "run `submitter init` (it creates the bucket and records it in .env)"))
    identity = None
    if aws is not None:
        identity = _guard(checks, "credentials", lambda: _identity(aws),
                          "run `aws configure` or `aws sso login`, or set SUBMITTER_PROFILE")
    if identity is not None and aws is not None:
        _guard(checks, "region", lambda: _region(aws), "set SUBMITTER_REGION to a region enabled for the account")
        if settings.bucket:
            _guard(checks, "bucket", lambda: _bucket(aws, settings.bucket or ""),
                   "run `submitter init`, or fix SUBMITTER_BUCKET")
        _guard(checks, "repository", lambda: _repository(aws, settings.ecr_repository), "run `submitter init`")
        if settings.ssh_key:
            _guard(checks, "ssh key", lambda: _ssh_key(aws, settings),
                   f"run `submitter init --key-pair {settings.ssh_key}`")
        checks.append(_permissions(aws, identity, settings.sandbox))
        checks += _quotas(aws, instance_types or ["c5.large", "g4dn.xlarge"], settings.sandbox)
    if engine is not None:
        _guard(checks, "docker engine", lambda: _engine(engine),
               "start the engine (`dockerd`, Docker Desktop) and check DOCKER_HOST; `docker info` must work")
    return checks


def _guard(checks: list[Check], name: str, run: Callable[[], str], fix: str) -> Any:
    from submitter.errors import SubmitterError

    try:
        detail = run()
    except SubmitterError as err:
        checks.append(Check(name, False, err.what, err.next_step or fix))
        return None
    except Exception as err:  # doctor reports anything it meets as a failed check, never a traceback
        checks.append(Check(name, False, f"{type(err).__name__}: {err}", fix))
        return None
    checks.append(Check(name, True, detail))
    return detail


def _identity(aws: Aws) -> str:
    return sts.identity(sts.client(aws)).arn


def _region(aws: Aws) -> str:
    zones = ec2_api.availability_zones(ec2_api.client(aws))
    return f"{aws.region} ({len(zones)} availability zones)"


def _bucket(aws: Aws, bucket: str) -> str:
    s3 = s3_api.client(aws, bucket)
    state = s3_api.bucket_state(s3, bucket)
    if state != "ours":
        raise SettingsError("bucket", f"{bucket} " + ("does not exist" if state == "missing" else
                            f"is not this account's ({aws.account()}), or this identity may not use it"),
                            "run `submitter init`, or set SUBMITTER_BUCKET to a bucket of this account")
    pab = s3_api.public_access_block(s3, bucket)
    if not pab or not all(pab.get(k) for k in PUBLIC_ACCESS_BLOCK):
        raise SettingsError("bucket", f"{bucket} does not block all public access",
                            "run `submitter init` (it turns Block Public Access on)")
    return f"{bucket}: exists, blocks public access"


def _repository(aws: Aws, name: str) -> str:
    from submitter.aws.ecr import Ecr

    found = Ecr(aws).repository(name)
    if not found:
        raise SettingsError("repository", f"ECR repository {name} does not exist", "run `submitter init`")
    return found.uri


def _ssh_key(aws: Aws, settings: Settings) -> str:
    name = settings.ssh_key or ""
    if not ec2_api.key_pair(ec2_api.client(aws), name):
        raise SettingsError("ssh key", f"SUBMITTER_SSH_KEY={name}: no such key pair in {aws.region}")
    path = settings.key_file(name)
    if not path.is_file():
        raise SettingsError("ssh key", f"the private key {path} is missing", "copy it there (mode 0600)")
    if path.stat().st_mode & 0o077:
        raise SettingsError("ssh key", f"{path} is readable by others", f"chmod 600 {path}")
    return f"{name}: {path}"


def _engine(engine: Callable[[], Any]) -> str:
    client = engine()
    version = client.version()
    return f"docker {version.get('Version', '?')} ({version.get('Os', '?')}/{version.get('Arch', '?')})"


def _permissions(aws: Aws, arn: str, sandbox: bool) -> Check:
    if sandbox:
        return Check("permissions", True, "sandbox: IAM is not enforced (moto); nothing to check")
    principal = _principal(arn)
    try:
        denied = iam_api.denied_actions(iam_api.client(aws), principal, ACTIONS)
    except AwsError as err:  # moto has no policy simulation
        return Check("permissions", False, f"could not simulate the policy of {principal} ({err.code})",
                     f"allow iam:SimulatePrincipalPolicy on {principal} so doctor can check the "
                     f"{len(ACTIONS)} actions submitter calls (listed in submitter/account/doctor.py, ACTIONS)")
    if denied:
        return Check("permissions", False, f"{len(denied)} action(s) not allowed: {', '.join(denied)}",
                     f"add to the policy of {principal}: " + ", ".join(denied))
    return Check("permissions", True, f"all {len(ACTIONS)} actions allowed for {principal}")


def _principal(arn: str) -> str:
    """An assumed-role session ARN -> its role ARN (what policy simulation takes)."""
    match = re.match(r"^arn:(aws[\w-]*):sts::(\d+):assumed-role/([^/]+)/", arn)
    return f"arn:{match.group(1)}:iam::{match.group(2)}:role/{match.group(3)}" if match else arn


def _quotas(aws: Aws, instance_types: list[str], sandbox: bool) -> list[Check]:
    if sandbox:
        return [Check("spot vCPU quota", True, "sandbox: no quotas (capacity is unlimited)")]
    try:
        vcpus = ec2_api.default_vcpus(ec2_api.client(aws), instance_types)
    except Exception as err:
        return [Check("spot vCPU quota", False, f"cannot read instance types: {err}",
                      "check the instance type names (e.g. c5.large)")]
    checks = []
    families: dict[str, list[str]] = {}
    for t in instance_types:
        families.setdefault(quota_family(t), []).append(t)
    for family, types in sorted(families.items()):
        code, label = SPOT_QUOTAS[family]
        need = max(vcpus.get(t, 0) for t in types)
        increase = (f"aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {code} "
                    f"--desired-value {max(need, 8)}")
        try:
            value = quotas_api.value(quotas_api.client(aws), "ec2", code)
        except AwsError as err:
            checks.append(Check(f"spot vCPU quota ({family})", False, f"Service Quotas not reachable ({err.code})",
                                f"allow servicequotas:GetServiceQuota, or look up '{label}' in the console"))
            continue
        ok = value >= need
        checks.append(Check(f"spot vCPU quota ({family})", ok,
                            f"{label}: {value:g} vCPU; the largest of {', '.join(types)} needs {need}",
                            "" if ok else increase))
    return checks
