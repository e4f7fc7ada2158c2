"""`submitter init`: the private bucket, the ECR repository and a key pair, shown as a plan, then created.

A second `init` finds everything as wanted and changes nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitter.aws import ec2 as ec2_api
from submitter.aws import s3 as s3_api
from submitter.aws.session import Aws
from submitter.errors import SettingsError, UsageError
from submitter.settings import Settings

TAGS = {"managed-by": "submitter"}
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                       "RestrictPublicBuckets": True}
ENCRYPTION = [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]
ABORT_UPLOADS_DAYS = 7


def bucket_policy(bucket: str) -> dict[str, Any]:
    """Refuse any request that is not over TLS: the only statement; access comes from IAM identities."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]}


def lifecycle_rules(prefix: str, expire_days: int | None) -> list[dict[str, Any]]:
    """Always drop half-finished uploads; with `expire_days`, also expire runs and submissions that old.
    Inputs stay: they are content-addressed and shared by later submissions."""
    rules: list[dict[str, Any]] = [{
        "ID": "submitter-abort-incomplete-uploads", "Status": "Enabled", "Filter": {"Prefix": f"{prefix}/"},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_UPLOADS_DAYS},
    }]
    if expire_days:
        for part in ("runs", "submissions"):
            rules.append({"ID": f"submitter-expire-{part}", "Status": "Enabled",
                          "Filter": {"Prefix": f"{prefix}/{part}/"}, "Expiration": {"Days": expire_days}})
    return rules


@dataclass
class Step:
    """One line of the init plan: a resource and what init does to it ('create', 'set', 'ok')."""

    kind: str
    name: str
    action: str
    detail: str = ""
    run: Callable[[], None] | None = field(default=None, repr=False)


@dataclass
class InitPlan:
    account: str
    region: str
    bucket: str
    repository: str
    key_name: str | None
    key_file: Path | None
    steps: list[Step]
    dotenv: dict[str, str]  # what .env should hold afterwards
    dotenv_path: Path | None  # None: nothing is recorded (sandbox)
    per_submission: list[str]

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.action not in ("ok", "skip")]

    def dotenv_changes(self) -> dict[str, str]:
        if self.dotenv_path is None:
            return {}
        current = _read_dotenv(self.dotenv_path)
        return {k: v for k, v in self.dotenv.items() if current.get(k) != v}


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def account_id(aws: Aws) -> str:
    return aws.account()


def default_bucket(aws: Aws, account: str, region: str) -> str:
    """`submitter-ACCOUNT-REGION-RANDOM`: the random part keeps anyone who knows the account id from creating
    the name first (and so receiving this account's runs, or blocking init). An earlier init's bucket of this
    account is found by its prefix and kept, so a second init creates nothing, with or without .env."""
    import secrets

    stem = f"submitter-{account}-{region}-"
    found = s3_api.owned_buckets(s3_api.client(aws), stem)
    return found[0] if found else stem + secrets.token_hex(4)


def plan_init(aws: Aws, settings: Settings, cwd: Path, key_name: str | None = None,
              expire_days: int | None = None) -> InitPlan:
    """Read what exists and decide what to create or set; nothing is changed here."""
    if key_name is not None and not KEY_NAME.match(key_name):
        raise UsageError("--key-pair", f"{key_name!r} is not a usable key pair name",
                         "use letters, digits, . _ - (it also names the file under $SUBMITTER_HOME/keys)")
    if expire_days is not None and expire_days < 1:
        raise UsageError("--expire-days", "must be at least 1", "omit it to keep runs until you delete them")
    account = account_id(aws)
    region = aws.region
    bucket = settings.bucket or default_bucket(aws, account, region)
    steps = _bucket_steps(aws, bucket, region, settings.prefix, expire_days, tls_only=not settings.sandbox)
    steps.append(_repository_step(aws, settings.ecr_repository))
    path = None
    if key_name:
        path = settings.key_file(key_name)
        steps.append(_key_step(aws, key_name, path))
    dotenv = {"SUBMITTER_REGION": region, "SUBMITTER_BUCKET": bucket,
              "SUBMITTER_ECR_REPOSITORY": settings.ecr_repository}
    if key_name:
        dotenv["SUBMITTER_SSH_KEY"] = key_name
    per_submission = [
        "instance role + instance profile submitter-SUBMISSION: only that submission's S3 keys and queue, "
        f"pulls from {settings.ecr_repository}, leaving its own group (see `submit --dry-run`, iam_policy)",
        "security group submitter-SUBMISSION with no inbound rules (`ssh` opens TCP 22 for your /32 only "
        "while connected)",
    ]
    return InitPlan(account, region, bucket, settings.ecr_repository, key_name, path, steps, dotenv,
                    None if settings.sandbox else cwd / ".env", per_submission)


def _bucket_steps(aws: Aws, bucket: str, region: str, prefix: str, expire_days: int | None,
                  tls_only: bool = True) -> list[Step]:
    s3 = s3_api.client(aws, bucket)  # every call below names this account as the bucket's expected owner
    state = s3_api.bucket_state(s3, bucket)
    if state == "foreign":
        raise SettingsError(f"SUBMITTER_BUCKET={bucket}", f"the bucket exists but is not this account's "
                            f"({aws.account()}), or this identity may not use it",
                            "pick another name with SUBMITTER_BUCKET=..., then run `submitter init` again")
    exists = state == "ours"
    steps = [Step("S3 bucket", bucket, "ok" if exists else "create", "private, objects owned by the bucket owner",
                  None if exists else lambda: s3_api.create_bucket(s3, bucket, region, TAGS))]
    wanted_rules = lifecycle_rules(prefix, expire_days)
    checks: list[tuple[str, Any, Any, Callable[[], None]]] = [
        ("Block Public Access", lambda: s3_api.public_access_block(s3, bucket), PUBLIC_ACCESS_BLOCK,
         lambda: s3_api.put_public_access_block(s3, bucket, PUBLIC_ACCESS_BLOCK)),
        ("default encryption SSE-S3 (AES256, bucket key)", lambda: s3_api.encryption(s3, bucket), ENCRYPTION,
         lambda: s3_api.put_encryption(s3, bucket, ENCRYPTION)),
        ("policy: deny requests without TLS", lambda: s3_api.policy(s3, bucket), bucket_policy(bucket),
         lambda: s3_api.put_policy(s3, bucket, bucket_policy(bucket))),
        ("lifecycle: abort unfinished uploads after 7 days"
         + (f"; expire runs and submissions after {expire_days} days" if expire_days else
            " (runs kept until deleted; --expire-days N to expire them)"),
         lambda: s3_api.lifecycle(s3, bucket), wanted_rules,
         lambda: s3_api.put_lifecycle(s3, bucket, wanted_rules)),
    ]
    if not tls_only:  # the sandbox's API is plain HTTP on loopback: a TLS-only policy would refuse everything
        checks = [c for c in checks if not c[0].startswith("policy")]
        steps.append(Step("  bucket setting", "policy: deny requests without TLS", "skip",
                          "sandbox: its API is plain HTTP on loopback"))
    for label, read, wanted, apply in checks:
        current = read() if exists else None
        same = current is not None and _same(current, wanted)
        steps.append(Step("  bucket setting", label, "ok" if same else "set", "", None if same else apply))
    return steps


def _same(current: Any, wanted: Any) -> bool:
    """`wanted` is contained in `current` (S3 adds defaults, e.g. an empty Filter's fields)."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(k in current and _same(current[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(current, list) and len(current) == len(wanted) and all(
            any(_same(c, w) for c in current) for w in wanted)
    return bool(current == wanted)


def _repository_step(aws: Aws, name: str) -> Step:
    from submitter.aws.ecr import Ecr

    ecr = Ecr(aws)
    found = ecr.repository(name)
    if found:
        return Step("ECR repository", name, "ok", found.uri)
    def create() -> None:
        ecr.ensure_repository(name)
    return Step("ECR repository", name, "create", "immutable tags, scan on push, lifecycle (keep 100 images)",
                create)


def _key_step(aws: Aws, name: str, path: Path) -> Step:
    ec2 = ec2_api.client(aws)
    found = ec2_api.key_pair(ec2, name)
    if found and path.is_file():
        return Step("EC2 key pair", name, "ok", f"private key {path}")
    if found:
        raise UsageError(f"key pair {name}", f"exists in EC2 ({aws.region}) but its private key is not at {path}; "
                         "EC2 hands a private key out only when it creates the pair",
                         f"copy the key file to {path} (mode 0600), or delete the pair "
                         f"(`aws ec2 delete-key-pair --key-name {name}`), or choose another --key-pair name")
    if path.is_file():
        def do_import() -> None:
            ec2_api.import_key_pair(ec2, name, public_key_of(path), TAGS)
        return Step("EC2 key pair", name, "create", f"imported from the existing {path}", do_import)

    def do_create() -> None:
        material = ec2_api.create_key_pair(ec2, name, TAGS)
        write_private(path, material)
    return Step("EC2 key pair", name, "create", f"ED25519; private key saved to {path} (0600)", do_create)


def write_private(path: Path, text: str) -> None:
    """Write a private key readable by its owner only; the directory too (0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")


def public_key_of(path: Path) -> str:
    import paramiko

    key = paramiko.PKey.from_path(path)
    return f"{key.get_name()} {key.get_base64()}"


def apply_init(plan: InitPlan, say: Callable[[str], None]) -> list[str]:
    """Execute the plan's changes in order and record the names in .env; returns what was done."""
    done = []
    for step in plan.changes:
        if step.run is not None:
            step.run()
        done.append(f"{step.action} {step.kind.strip()} {step.name}")
        say(f"{step.action}: {step.kind.strip()} {step.name}")
    changes = plan.dotenv_changes()
    if changes and plan.dotenv_path is not None:
        from dotenv import set_key

        plan.dotenv_path.touch(exist_ok=True)
        for name, value in changes.items():
            set_key(str(plan.dotenv_path), name, value, quote_mode="never")
        done.append(f"recorded {', '.join(changes)} in {plan.dotenv_path}")
        say(f"recorded in {plan.dotenv_path}: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    return done


def render_plan(plan: InitPlan) -> list[str]:
    lines = [f"account {plan.account}, region {plan.region}"]
    for step in plan.steps:
        mark = {"ok": "exists", "create": "create", "set": "set", "skip": "skip"}[step.action]
        detail = f" ({step.detail})" if step.detail else ""
        lines.append(f"  {mark:7} {step.kind} {step.name}{detail}")
    lines.append("  per submission, created by `submit` and removed when it drains (not by init):")
    lines += [f"          {text}" for text in plan.per_submission]
    if plan.dotenv_path is None:
        lines.append("  .env: not written in the sandbox (`submitter sandbox env` gives its settings)")
    else:
        changes = plan.dotenv_changes()
        lines.append(f"  .env ({plan.dotenv_path}): " + (
            ", ".join(f"{k}={v}" for k, v in changes.items()) if changes else "already up to date"))
    return lines
