"""AWS's server-side limits in the sandbox's moto: what AWS refuses for what submitter creates, refused here too,
with AWS's error code (and its message where AWS documents one).

moto checks a few of these itself (SQS queue names, batch entry counts, EC2's 50 tags, IAM role tags); the rest
it accepts, so a plan that crosses one would pass every sandbox test and fail on its first real run. Each patch
below adds one AWS behaviour, wraps one moto method (the response handler where the limit is on the request as
sent, the backend method where it is on the resource) and takes its numbers from submitter/aws/limits.py, the
same numbers the plan checks against. `install()` returns the function that takes them out again (tests).
"""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from submitter.aws import limits

Check = Callable[[dict[str, Any]], None]  # the call's arguments by name (`self` included); raises to refuse


def install() -> Callable[[], None]:
    """Install every limit below into moto (in this process); returns the function that removes them."""
    from moto.autoscaling.models import AutoScalingBackend
    from moto.ec2.responses.instances import InstanceResponse
    from moto.ec2.responses.launch_templates import LaunchTemplates
    from moto.ec2.responses.security_groups import SecurityGroups
    from moto.ec2.responses.tags import TagResponse
    from moto.ecr.responses import ECRResponse
    from moto.iam.models import IAMBackend
    from moto.s3.models import S3Backend
    from moto.sqs.responses import SQSResponse
    from moto.ssm.models import SimpleSystemManagerBackend

    patches: list[tuple[type, str, Check]] = [
        (InstanceResponse, "run_instances", ec2_user_data_16_kib),
        (InstanceResponse, "run_instances", ec2_tag_rules),
        (LaunchTemplates, "create_launch_template", ec2_launch_template_name),
        (LaunchTemplates, "create_launch_template", ec2_user_data_16_kib),
        (LaunchTemplates, "create_launch_template", ec2_tag_rules),
        (LaunchTemplates, "create_launch_template_version", ec2_user_data_16_kib),
        (TagResponse, "create_tags", ec2_tag_rules),
        (SecurityGroups, "create_security_group", ec2_security_group_name),
        (SecurityGroups, "create_security_group", ec2_tag_rules),
        (ECRResponse, "create_repository", ecr_repository_name),
        (SQSResponse, "create_queue", sqs_tag_rules),
        (SQSResponse, "tag_queue", sqs_tag_rules),
        (SQSResponse, "send_message", sqs_message_size),
        (SQSResponse, "send_message_batch", sqs_batch_size),
        (IAMBackend, "create_role", iam_role_name),
        (IAMBackend, "create_instance_profile", iam_instance_profile_name_and_tags),
        (IAMBackend, "tag_instance_profile", iam_instance_profile_name_and_tags),
        (IAMBackend, "_tag_verification", iam_reserved_tag_prefix),
        (IAMBackend, "put_role_policy", iam_role_inline_policies_10240),
        (AutoScalingBackend, "create_auto_scaling_group", asg_overrides_and_tags),
        (AutoScalingBackend, "update_auto_scaling_group", asg_overrides_and_tags),
        (AutoScalingBackend, "create_or_update_tags", asg_overrides_and_tags),
        (AutoScalingBackend, "detach_instances", asg_detach_members),
        (S3Backend, "put_object", s3_key_1024_bytes),
        (S3Backend, "create_multipart_upload", s3_key_1024_bytes),
        (S3Backend, "copy_object", s3_key_1024_bytes),
        (SimpleSystemManagerBackend, "put_parameter", ssm_parameter_limits),
        (SimpleSystemManagerBackend, "add_tags_to_resource", ssm_parameter_limits),
    ]
    undo = [_before(owner, method, check) for owner, method, check in patches]

    def uninstall() -> None:
        for restore in reversed(undo):
            restore()

    return uninstall


def _before(owner: type, method: str, check: Check) -> Callable[[], None]:
    """Run `check` on the call's arguments before moto's `owner.method`; returns what puts the method back."""
    original = owner.__dict__[method]  # on this class itself: a renamed moto method fails here, not silently
    signature = inspect.signature(original)

    def limited(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        check(bound.arguments)
        return original(*args, **kwargs)

    functools.update_wrapper(limited, original)  # its signature too: a second check on the same method binds it
    limited.__name__ = limited.__qualname__ = f"{method}_within_{check.__name__}"
    setattr(owner, method, limited)
    return lambda: setattr(owner, method, original)


def _constraint(value: str, where: str, rule: str) -> str:
    """The wording of a request-model constraint error (IAM, Auto Scaling, SSM answer in this form)."""
    return f"1 validation error detected: Value '{value}' at '{where}' failed to satisfy constraint: {rule}"


def name_rule(value: str, where: str, most: int, pattern: str) -> str | None:
    """Why `value` breaks a name's length or pattern, in AWS's words; None if it does not."""
    if len(value) > most:
        return _constraint(value, where, f"Member must have length less than or equal to {most}")
    if not value:
        return _constraint(value, where, "Member must have length greater than or equal to 1")
    if not re.fullmatch(pattern, value):
        return _constraint(value, where, f"Member must satisfy regular expression pattern: {pattern}")
    return None


def _tag_constraint(rule: str, key: str) -> str:
    """A per-tag rule broken, in the request model's words (Auto Scaling, SSM)."""
    if rule == "reserved":
        return _constraint(key[:200], "tags.member.key", "Tag keys starting with 'aws:' are reserved for AWS use")
    most = limits.TAG_VALUE_CHARS if rule == "value" else limits.TAG_KEY_CHARS
    return _constraint(key[:200], f"tags.member.{rule}", f"Member must have length less than or equal to {most}")


def tag_problem(pairs: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """(which rule, the offending key) for the first tag that breaks a per-tag rule: 'reserved', 'key', 'value'."""
    for key, value in pairs:
        if key.lower().startswith("aws:"):
            return "reserved", key
        if not key or len(key) > limits.TAG_KEY_CHARS:
            return "key", key
        if value is not None and len(value) > limits.TAG_VALUE_CHARS:
            return "value", key
    return None


def ec2_user_data_16_kib(call: dict[str, Any]) -> None:
    """RunInstances / CreateLaunchTemplate(Version): user data over 16 KB raw (after base64 decoding)."""
    from moto.ec2.exceptions import InvalidParameterValue

    response = call["self"]
    encoded = response._get_param("UserData")
    if encoded is None:
        encoded = (response._get_param("LaunchTemplateData", {}) or {}).get("UserData")
    if not encoded:
        return
    try:
        raw = base64.b64decode(encoded)
    except (binascii.Error, ValueError):
        return  # moto answers malformed base64 itself (InvalidUserData.Malformed)
    if len(raw) > limits.USER_DATA_BYTES:
        raise InvalidParameterValue(f"User data is limited to {limits.USER_DATA_BYTES} bytes")


def ec2_launch_template_name(call: dict[str, Any]) -> None:
    """CreateLaunchTemplate: 3-128 characters of letters, digits and ( ) . - / _ (EC2 error codes)."""
    from moto.ec2.exceptions import EC2ClientError

    name = call["self"]._get_param("LaunchTemplateName") or ""
    if not limits.LAUNCH_TEMPLATE_NAME.fullmatch(name):
        raise EC2ClientError(
            "InvalidLaunchTemplateName.MalformedException",
            "The specified launch template name is invalid. A launch template name must be between 3 and 128 "
            "characters, and may contain letters, numbers, and the following characters: '-', '_', '.', '/', "
            "'(', and ')'.")


def ec2_tag_rules(call: dict[str, Any]) -> None:
    """TagSpecifications and CreateTags: key 1-128, value up to 256, no `aws:` key. (moto counts the 50 itself.)"""
    from moto.ec2.exceptions import InvalidParameterValue

    response = call["self"]
    specs = response._get_param("TagSpecification", []) or response._get_param("TagSpecifications", []) or []
    tags = [t for spec in ([specs] if isinstance(specs, dict) else specs) for t in spec.get("Tags", []) or []]
    tags += response._get_param("Tags", []) or []  # CreateTags
    problem = tag_problem((t.get("Key", ""), t.get("Value", "")) for t in tags if isinstance(t, dict))
    if problem is None:
        return
    rule, key = problem
    raise InvalidParameterValue({
        "reserved": "Tag keys starting with 'aws:' are reserved for internal use",
        "key": f"Tag key exceeds the maximum length of {limits.TAG_KEY_CHARS} characters",
        "value": f"Tag value exceeds the maximum length of {limits.TAG_VALUE_CHARS} characters",
    }[rule])


def ec2_security_group_name(call: dict[str, Any]) -> None:
    """CreateSecurityGroup: 1-255 characters of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$*, not `sg-*`."""
    from moto.ec2.exceptions import InvalidParameterValue

    name = call["self"]._get_param("GroupName") or ""
    if name.lower().startswith("sg-"):
        raise InvalidParameterValue("Group names may not be in the format sg-*.")
    if not limits.EC2_SECURITY_GROUP_NAME.fullmatch(name):
        raise InvalidParameterValue(f"Value ({name[:200]}) for parameter GroupName is invalid: 1-255 characters of "
                                    "a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*")


def ecr_repository_name(call: dict[str, Any]) -> None:
    """CreateRepository: 2-256 characters (moto checks the pattern, not the length)."""
    from moto.ecr.exceptions import InvalidParameterException

    name = call["self"]._get_param("repositoryName") or ""
    shortest, longest = limits.ECR_REPOSITORY_CHARS
    if not shortest <= len(name) <= longest:
        raise InvalidParameterException(_constraint(
            name[:200], "repositoryName", f"Member must have length between {shortest} and {longest}"))


def sqs_size(body: str, attributes: Mapping[str, Any]) -> int:
    """A message's size as SQS counts it: the body's UTF-8 bytes plus each attribute's name, type and value."""
    size = len(body.encode())
    for name, attribute in (attributes or {}).items():
        size += len(name.encode()) + len(str(attribute.get("DataType", "")).encode())
        value = attribute.get("StringValue")
        binary = attribute.get("BinaryValue")
        size += len(value.encode()) if isinstance(value, str) else len(binary or b"")
    return size


def sqs_message_size(call: dict[str, Any]) -> None:
    """SendMessage: over the queue's MaximumMessageSize (default and most 1 MiB), counted as bytes with the
    message attributes (moto counts the body's characters only)."""
    from moto.sqs.exceptions import InvalidParameterValue

    response = call["self"]
    queue = response.sqs_backend.get_queue(response._get_queue_name())
    most = min(int(queue.maximum_message_size), limits.SQS_MESSAGE_BYTES_MAX)
    size = sqs_size(response._get_param("MessageBody") or "", response._get_param("MessageAttributes", {}))
    if size > most:
        raise InvalidParameterValue(
            f"One or more parameters are invalid. Reason: Message must be shorter than {most} bytes.")


def sqs_batch_size(call: dict[str, Any]) -> None:
    """SendMessageBatch: more than 10 entries, or all of them together over 1 MiB in bytes with attributes."""
    from moto.sqs.exceptions import BatchRequestTooLong, TooManyEntriesInBatchRequest

    entries = call["self"]._get_param("Entries", []) or []
    if len(entries) > limits.SQS_BATCH_ENTRIES:
        raise TooManyEntriesInBatchRequest(len(entries))
    total = sum(sqs_size(e.get("MessageBody") or "", e.get("MessageAttributes") or {}) for e in entries)
    if total > limits.SQS_MESSAGE_BYTES_MAX:
        raise BatchRequestTooLong(total)


def sqs_tag_rules(call: dict[str, Any]) -> None:
    """CreateQueue / TagQueue: at most 50 tags, key 1-128, value up to 256, no `aws:` key."""
    from moto.sqs.exceptions import InvalidParameterValue

    response = call["self"]
    tags = response._get_param("tags", {}) or response._get_param("Tags", {}) or {}
    if len(tags) > limits.TAGS_PER_RESOURCE:
        raise InvalidParameterValue(f"Too many tags added for queue {response._get_param('QueueName') or ''}.")
    problem = tag_problem(tags.items())
    if problem is None:
        return
    rule, key = problem
    raise InvalidParameterValue({
        "reserved": f"Tag key {key!r} is invalid: the aws: prefix is reserved.",
        "key": f"Tag keys must be between 1 and {limits.TAG_KEY_CHARS} characters in length.",
        "value": f"Tag values must be less than {limits.TAG_VALUE_CHARS + 1} characters in length.",
    }[rule])


IAM_NAME_PATTERN = r"[\w+=,.@-]+"


def iam_role_name(call: dict[str, Any]) -> None:
    """CreateRole: a name of 1-64 of [A-Za-z0-9+=,.@_-]; a trust policy of at most 2,048 characters (the default
    quota), whitespace not counted."""
    from moto.iam.exceptions import LimitExceededException, ValidationError

    problem = name_rule(call["role_name"], "roleName", 64, IAM_NAME_PATTERN)
    if problem:
        raise ValidationError(problem)
    if limits.policy_chars(call["assume_role_policy_document"] or "") > limits.IAM_TRUST_POLICY_CHARS:
        raise LimitExceededException(f"Cannot exceed quota for ACLSizePerRole: {limits.IAM_TRUST_POLICY_CHARS}")


def iam_instance_profile_name_and_tags(call: dict[str, Any]) -> None:
    """CreateInstanceProfile / TagInstanceProfile: a name of 1-128 of [A-Za-z0-9+=,.@_-]; its tags checked as a
    role's are (moto checks a role's tags only)."""
    from moto.iam.exceptions import ValidationError

    problem = name_rule(call["name"], "instanceProfileName", 128, IAM_NAME_PATTERN) if "name" in call else None
    if problem:
        raise ValidationError(problem)
    if call.get("tags"):
        call["self"]._tag_verification(call["tags"])


def iam_reserved_tag_prefix(call: dict[str, Any]) -> None:
    """Every IAM tagging call: a key starting with `aws:` is reserved."""
    from moto.iam.exceptions import ValidationError

    for tag in call["tags"] or []:
        if str(tag.get("Key", "")).lower().startswith("aws:"):
            raise ValidationError(f"Tag key {tag['Key']!r} is invalid: the aws: prefix is reserved for AWS use.")


def iam_role_inline_policies_10240(call: dict[str, Any]) -> None:
    """PutRolePolicy: a policy name of 1-128 characters; all of the role's inline policies together (this one
    replacing one of the same name) at most 10,240 characters, whitespace not counted."""
    from moto.iam.exceptions import LimitExceededException, NotFoundException, ValidationError

    problem = name_rule(call["policy_name"], "policyName", 128, IAM_NAME_PATTERN)
    if problem:
        raise ValidationError(problem)
    try:
        role = call["self"].get_role(call["role_name"])
    except NotFoundException:
        return  # moto answers NoSuchEntity itself
    others = sum(limits.policy_chars(doc) for name, doc in role.policies.items() if name != call["policy_name"])
    if others + limits.policy_chars(call["policy_json"]) > limits.IAM_ROLE_INLINE_CHARS:
        raise LimitExceededException(
            f"Maximum policy size of {limits.IAM_ROLE_INLINE_CHARS} bytes exceeded for role {call['role_name']}")


def asg_overrides_and_tags(call: dict[str, Any]) -> None:
    """CreateAutoScalingGroup / UpdateAutoScalingGroup / CreateOrUpdateTags: at most 40 overrides in a mixed
    instances policy; at most 50 tags, key 1-128, value up to 256, no `aws:` key."""
    from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError

    policy = call.get("mixed_instances_policy") or {}
    overrides = (policy.get("LaunchTemplate") or {}).get("Overrides") or []
    if len(overrides) > limits.ASG_OVERRIDES:
        raise ValidationError(_constraint(
            str(overrides)[:200], "mixedInstancesPolicy.launchTemplate.overrides",
            f"Member must have length less than or equal to {limits.ASG_OVERRIDES}"))
    tags = call.get("tags") or []
    if call.get("name") and len(tags) > limits.TAGS_PER_RESOURCE:
        raise AutoscalingClientError("LimitExceeded", f"The number of tags for Auto Scaling group {call['name']} "
                                                      f"exceeds the limit of {limits.TAGS_PER_RESOURCE}.")
    problem = tag_problem((str(t.get("Key", "")), str(t.get("Value", ""))) for t in tags)
    if problem:
        raise ValidationError(_tag_constraint(*problem))


def asg_detach_members(call: dict[str, Any]) -> None:
    """DetachInstances: at most 20 ids, each a member of the group (moto ignores any other id; AWS answers
    "The instance ID is not part of Auto Scaling group NAME.", a ValidationError)."""
    from moto.autoscaling.exceptions import ValidationError

    ids = list(call.get("instance_ids") or [])
    if len(ids) > 20:
        raise ValidationError("List exceeds the maximum number of instances to detach. Please retry your request "
                              "with fewer instances.")
    group = call["self"].autoscaling_groups.get(call["group_name"])
    members = {state.instance.id for state in group.instance_states} if group is not None else set()
    for instance_id in ids:
        if instance_id not in members:
            raise ValidationError(f"The instance {instance_id} is not part of Auto Scaling group {call['group_name']}.")


def s3_key_1024_bytes(call: dict[str, Any]) -> None:
    """PutObject / CreateMultipartUpload / CopyObject: a key over 1,024 bytes of UTF-8."""
    from moto.s3.exceptions import S3ClientError

    key = call.get("key_name", call.get("dest_key_name")) or ""
    if len(key.encode()) > limits.S3_KEY_BYTES:
        raise S3ClientError("KeyTooLongError", "Your key is too long")


def ssm_parameter_limits(call: dict[str, Any]) -> None:
    """PutParameter: the name (its ARN included) at most 1,011 characters and 15 levels; a Standard value at
    most 4 KB, an Advanced one 8 KB; at most 50 tags, key 1-128, value up to 256, no `aws:` key."""
    from moto.ssm.exceptions import SSMException, ValidationException

    backend, name = call["self"], call.get("name") or ""
    if "value" in call:
        arn = f"arn:{backend.partition}:ssm:{backend.region_name}:{backend.account_id}:parameter/{name.lstrip('/')}"
        if len(arn) > limits.SSM_NAME_CHARS:
            raise ValidationException(_constraint(
                name[:200], "name", f"Member must have length less than or equal to {limits.SSM_NAME_CHARS} "
                                    "(the parameter's ARN included)"))
        if len([part for part in name.split("/") if part]) > limits.SSM_NAME_LEVELS:
            raise SSMException("HierarchyLevelLimitExceededException",
                               f"A hierarchy can have a maximum of {limits.SSM_NAME_LEVELS} levels.")
        tier = call.get("tier") or backend.default_parameter_tier or "Standard"
        size = len(str(call.get("value") or "").encode())
        if tier == "Standard" and size > limits.SSM_STANDARD_VALUE_BYTES:
            raise ValidationException(
                f"Standard tier parameters support a maximum parameter value of {limits.SSM_STANDARD_VALUE_BYTES} "
                "characters. To create a larger parameter value, upgrade the parameter to use the "
                "advanced-parameter tier.")
        if size > limits.SSM_ADVANCED_VALUE_BYTES:
            raise ValidationException(_constraint(
                "...", "value", f"Member must have length less than or equal to {limits.SSM_ADVANCED_VALUE_BYTES}"))
    tags = call.get("tags") or []
    pairs = list(tags.items()) if isinstance(tags, dict) else [(t.get("Key", ""), t.get("Value", "")) for t in tags]
    if len(pairs) > limits.TAGS_PER_RESOURCE:
        raise SSMException("TooManyTagsError", "The Targets parameter includes too many tags. Remove one or more "
                                               "tags and try the command again.")
    problem = tag_problem(pairs)
    if problem:
        raise ValidationException(_tag_constraint(*problem))
