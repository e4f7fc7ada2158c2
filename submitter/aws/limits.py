"""AWS's server-side limits for what submitter creates, in one place, each with where AWS states it.

The plan checks against these before anything is created (a bad value is a user error naming the field, not
a half-made submission), and the sandbox refuses the same values the way AWS does (sandbox/fidelity.py), so
a test that crosses one fails in both. Pure data and pure checks: no SDK import.

Sources (AWS documentation, as of 2026):
- EC2 user data: "limited to 16 KB, in raw form, before it is base64-encoded" (EC2 User Guide, "Run commands
  when you launch an EC2 instance with user data input").
- SQS: "The minimum message size is 1 byte ... The maximum is 262,144 bytes (256 KiB)"; a batch holds at most
  10 messages and 256 KiB in total; a queue name has up to 80 characters of alphanumerics, hyphens and
  underscores (SQS Developer Guide, "Amazon SQS quotas").
- IAM: role name 64 characters, instance profile and policy names 128, of [A-Za-z0-9+=,.@_-]; "the size of
  all inline policies embedded in a role cannot exceed 10,240 characters" (whitespace not counted); managed
  policy 6,144 characters; role session name 64 (IAM User Guide, "IAM and AWS STS quotas").
- Tags: 50 per resource; key up to 128 Unicode characters, value up to 256; the `aws:` prefix is reserved
  (Tagging AWS Resources, "Tag naming limits and requirements"; EC2 User Guide, "Tag restrictions").
- S3 object key: up to 1,024 bytes of UTF-8 (S3 User Guide, "Naming Amazon S3 objects").
- EC2 launch template name: 3 to 128 characters of [A-Za-z0-9().\\-/_] (EC2 API Reference,
  CreateLaunchTemplate). Auto Scaling group name: up to 255 characters; a mixed instances policy takes at most
  40 overrides (Auto Scaling API Reference, LaunchTemplate.Overrides: "Maximum number of 40 items").
- SSM parameter: name up to 1,011 characters below the hierarchy root, at most 15 levels; a Standard
  parameter's value up to 4 KB (Systems Manager User Guide, "Parameter Store quotas" / PutParameter).
- AWS Batch: job, job queue, compute environment and job definition names up to 128 characters of letters,
  digits, hyphens and underscores, starting with a letter or digit; array size 2 to 10,000 (Batch API
  Reference, SubmitJob / RegisterJobDefinition / ArrayProperties).
- IAM role trust policy: 2,048 characters by default, whitespace not counted (adjustable to 4,096; IAM User Guide,
  "IAM and AWS STS quotas": "Role trust policy length").
- EC2 security group name: "Up to 255 characters in length. Cannot start with sg-." of a-z, A-Z, 0-9, spaces and
  ._-:/()#,@[]+=&;{}!$* (EC2 API Reference, CreateSecurityGroup, GroupName).
- SSM parameter name: "The maximum length for a parameter name that you create is 1011 characters. This includes
  the characters in the ARN that precede the name you specify, such as arn:aws:ssm:us-east-2:111122223333:parameter/"
  (Systems Manager API Reference, PutParameter, Name).
- ECR repository name: 2 to 256 characters, lowercase, `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`
  (ECR API Reference, CreateRepository).
- SQS since August 2025: "The maximum size is 1 MiB or 1,048,576 bytes" for a message, its attributes included, and
  for a batch in total; a queue's MaximumMessageSize is 1,024 to 1,048,576 bytes, default 1,048,576 (SQS API
  Reference, SendMessage / SendMessageBatch / SetQueueAttributes). SQS_MESSAGE_BYTES above is the former limit.
- SSM parameter value: "Standard parameters have a value limit of 4 KB. Advanced parameters have a value limit of
  8 KB." (Systems Manager API Reference, PutParameter, Value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

USER_DATA_BYTES = 16 * 1024
SQS_MESSAGE_BYTES = 256 * 1024
SQS_BATCH_ENTRIES = 10
SQS_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
IAM_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
IAM_PROFILE_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
IAM_POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
IAM_ROLE_INLINE_CHARS = 10_240  # all inline policies of one role together, whitespace not counted
IAM_MANAGED_POLICY_CHARS = 6_144
IAM_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
TAGS_PER_RESOURCE = 50
TAG_KEY_CHARS = 128
TAG_VALUE_CHARS = 256
S3_KEY_BYTES = 1024
LAUNCH_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9().\-/_]{3,128}$")
ASG_NAME_CHARS = 255
ASG_OVERRIDES = 40
SSM_NAME_CHARS = 1011
SSM_NAME_LEVELS = 15
SSM_STANDARD_VALUE_BYTES = 4096
BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
BATCH_ARRAY_SIZE = (2, 10_000)
ECR_REPOSITORY = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
ECR_REPOSITORY_CHARS = (2, 256)
IAM_TRUST_POLICY_CHARS = 2_048
EC2_SECURITY_GROUP_NAME = re.compile(r"^(?!sg-)[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{1,255}$")
SQS_MESSAGE_BYTES_MAX = 1_048_576  # what SQS accepts now (message or batch); a queue may set less
SSM_ADVANCED_VALUE_BYTES = 8192


@dataclass(frozen=True)
class Breach:
    """One limit a value crosses: what (`subject`, e.g. "IAM role name"), the value's size or text, the limit."""

    subject: str
    detail: str


def policy_chars(document: Mapping[str, Any] | str) -> int:
    """A policy's size as IAM counts it: the JSON text without whitespace."""
    text = document if isinstance(document, str) else json.dumps(document, separators=(",", ":"))
    return sum(1 for ch in text if not ch.isspace())


def name(subject: str, value: str, pattern: re.Pattern[str]) -> Breach | None:
    """A name against its pattern (length and characters together, as AWS's validation reports them)."""
    if pattern.fullmatch(value):
        return None
    return Breach(subject, f"{value!r} ({len(value)} characters) does not match {pattern.pattern}")


def tags(values: Mapping[str, str]) -> Breach | None:
    """A resource's tag set against the tag limits."""
    if len(values) > TAGS_PER_RESOURCE:
        return Breach("tags", f"{len(values)} tags; at most {TAGS_PER_RESOURCE} per resource")
    for key, value in values.items():
        if len(key) > TAG_KEY_CHARS or not key or key.lower().startswith("aws:"):
            return Breach("tag key", f"{key[:40]!r}... is {len(key)} characters (1-{TAG_KEY_CHARS}, not aws:)")
        if len(value) > TAG_VALUE_CHARS:
            return Breach(f"tag {key}", f"value of {len(value)} characters; at most {TAG_VALUE_CHARS}")
    return None


def size(subject: str, data: bytes | str, limit: int) -> Breach | None:
    """A payload's UTF-8 size against a byte limit."""
    count = len(data.encode() if isinstance(data, str) else data)
    if count <= limit:
        return None
    return Breach(subject, f"{count:,} bytes; at most {limit:,}")
