"""AWS's limits on what a submission creates, checked on the plan before anything is built or created.

Each value checked is the one the backend will send, built by the backend's own code (names, policies, tags,
overrides, queue messages, S3 keys), so a refusal here is what AWS would refuse later, half-way through a
submission. Each crossing names the spec field or the setting that causes it and what to change. `submit` and
`submit --dry-run` both run `check`. The limits and their sources: aws/limits.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from submitter import contract
from submitter.aws import limits, sqs
from submitter.errors import SettingsError, SpecError, SpecProblem, UsageError
from submitter.plan import Plan

# execve(2): "the limit per string is 32 pages (the kernel constant MAX_ARG_STRLEN)", 131,072 bytes with 4 KiB
# pages. Each NAME=value of the container's environment is one such string: a longer one fails the container's
# start (E2BIG) on the worker, after everything was created and billed.
ENV_STRING_BYTES = 32 * 4096
# Room kept under S3's key limit below each prefix a run writes into (outputs, checkpoints, log chunks): the file
# names there are the job's own, unknown at plan time.
RUN_PATH_ROOM = 256
LONGEST_INSTANCE_ID = "i-" + "f" * 17
LARGEST_CHUNK = 999_999
ACCOUNT_DIGITS = 12

NAME_NEXT = "use a shorter job name (name:)"
ENV_NEXT = "keep env and sweep values small; pass data as inputs (files on the data volume) instead"


@dataclass(frozen=True)
class Crossing:
    """One limit a planned value crosses: its cause (a spec field path, or a setting's name), the breach, and what
    to change."""

    cause: str
    breach: limits.Breach
    next_step: str
    setting: bool = False


def check(plan: Plan) -> None:
    """Raise what `crossings` finds: a SettingsError for the first one a setting causes, else one SpecError with
    every one the spec causes (one edit fixes them all)."""
    found = crossings(plan)
    for c in found:
        if c.setting:
            raise SettingsError(c.cause, f"{c.breach.subject}: {c.breach.detail}", c.next_step)
    if found:
        raise SpecError([SpecProblem(plan.spec_file, None, c.cause,
                                     f"{c.breach.subject}: {c.breach.detail}; {c.next_step}") for c in found])


def crossings(plan: Plan) -> list[Crossing]:
    """Every AWS limit the plan crosses, for the backend it names."""
    from submitter import backends

    found = [*environment(plan), *keys(plan), *secret_names(plan), *_tags("tags", plan.tags)]
    found += BACKEND_CHECKS[backends.for_plan(plan).name](plan)
    return list(dict.fromkeys(found))  # one tag set or name crossed on several resources is said once


def check_secret_values(values: Mapping[str, str]) -> None:
    """The secrets' values (read at submit time) against SSM's Standard parameter size; never shows a value."""
    for name, value in values.items():
        breach = limits.size(f"the value of secret {name}", value, limits.SSM_STANDARD_VALUE_BYTES)
        if breach:
            raise UsageError(f"secret {name} (environment or .env)", f"{breach.detail} (SSM Parameter Store)",
                             "store a shorter value (a token rather than a key file); pass files as inputs")


# ---------------------------------------------------------------------------------------------- environment


def environment(plan: Plan) -> list[Crossing]:
    """Each variable against the kernel's per-string limit, then the largest run message against SQS's: the env
    and the sweep's values travel in it (contract.run_message); on Batch in the runs document, held to the same
    size so a spec runs on either backend."""
    spec = plan.spec
    found = []
    values = [(f"env.{k}", k, v) for k, v in spec.env.items()]
    values += [(f"sweep.{k}.{i}", k, v) for k, vs in spec.sweep.items() for i, v in enumerate(vs)]
    for cause, key, value in values:
        breach = limits.size(f"environment variable {key}", f"{key}={value}\0", ENV_STRING_BYTES)
        if breach:
            found.append(Crossing(cause, breach, ENV_NEXT))
    if found:
        return found
    # The run whose message is the largest: the longest run id with each sweep key's longest value.
    last = plan.runs[-1]
    worst = dict(spec.env)
    for key, options in spec.sweep.items():
        worst[key] = max(options, key=lambda value: _entry_bytes(key, value))
    breach = limits.size("the largest run message (env and sweep values, as JSON)",
                         sqs.body(contract.run_message(last.run_id, last.index, worst)), limits.SQS_MESSAGE_BYTES)
    if breach is None:
        return []
    env_alone = sqs.body(contract.run_message(last.run_id, last.index, dict(spec.env)))
    cause = "env" if limits.size("", env_alone, limits.SQS_MESSAGE_BYTES) or not spec.sweep else "sweep"
    return [Crossing(cause, breach, ENV_NEXT)]


def _entry_bytes(key: str, value: str) -> int:
    return len(sqs.body({key: value}).encode())


# ---------------------------------------------------------------------------------------------- S3 keys


def keys(plan: Plan) -> list[Crossing]:
    """Every key the layout makes for the submission (with its longest run id) against S3's key limit, with room
    below the prefixes a run writes into; and the staged inputs' keys, file by file."""
    from submitter.backends import staging
    from submitter.runtime import index as run_index

    layout, sub = plan.layout, plan.submission_id
    run = max((r.run_id for r in plan.runs), key=len)
    made = [layout.run_spec(run), layout.status(run), layout.run_cancel(run), layout.container_log(run),
            layout.agent_log(run), layout.chunk(run, LARGEST_CHUNK), layout.submission_doc(sub), layout.queued(sub),
            layout.batch_record(sub), layout.batch_runs(sub), layout.submission_cancel(sub),
            layout.instance_report(sub, LONGEST_INSTANCE_ID), layout.runtime(sub),
            layout.input_complete("f" * staging.DIGEST_CHARS), layout.index_entry(sub, run, run_index.LONGEST_ENTRY)]
    made += [prefix + "x" * RUN_PATH_ROOM for prefix in (layout.outputs(run), layout.checkpoints(run))]
    found = []
    for key in made:
        breach = limits.size(f"S3 key {key[:60]}...", key, limits.S3_KEY_BYTES)
        if breach:
            found.append(Crossing("SUBMITTER_PREFIX", breach, "use a shorter SUBMITTER_PREFIX", setting=True))
            break
    staged = layout.input("f" * staging.DIGEST_CHARS)
    for index, item in enumerate(plan.spec.inputs):
        local = plan.loaded.local_inputs.get(item.source)
        if local is None or not local.exists():
            continue
        breach = _longest_key(staged, (rel for rel, _ in staging.input_files(local)))
        if breach:
            found.append(Crossing(f"inputs.{index}.source", breach,
                                  "rename or move the file: staged inputs keep their paths below the input"))
    return found


def _longest_key(prefix: str, names: Iterable[str]) -> limits.Breach | None:
    longest = ""
    for rel in names:
        try:
            rel.encode()
        except UnicodeEncodeError:
            return limits.Breach(f"file {rel.encode(errors='replace').decode()!r}",
                                 "its name is not UTF-8, and S3 keys are UTF-8 text")
        if len(rel.encode()) > len(longest.encode()):
            longest = rel
    breach = limits.size(f"S3 key of file {longest[:60]!r}", prefix + longest, limits.S3_KEY_BYTES)
    return breach


# ---------------------------------------------------------------------------------------------- SSM, names, tags


def secret_names(plan: Plan) -> list[Crossing]:
    """Each secret's SSM parameter name: its whole ARN counts, and its levels."""
    account = plan.account if plan.account.isdigit() else "0" * ACCOUNT_DIGITS
    found = []
    for index, secret in enumerate(plan.spec.secrets):
        parameter = contract.secrets_prefix(plan.submission_id) + secret
        arn = f"arn:aws:ssm:{plan.region}:{account}:parameter{parameter}"
        breach = limits.size(f"SSM parameter name of secret {secret[:40]}", arn, limits.SSM_NAME_CHARS)
        if breach is None and parameter.count("/") > limits.SSM_NAME_LEVELS:
            breach = limits.Breach("SSM parameter name", f"{parameter.count('/')} levels; at most "
                                   f"{limits.SSM_NAME_LEVELS}")
        if breach:
            found.append(Crossing(f"secrets.{index}", breach, "use a shorter secret name"))
    return found


def _names(cause: str, next_step: str, named: Iterable[tuple[str, str, Any]]) -> list[Crossing]:
    """(subject, value, pattern or maximum length) each; a crossing per name that breaks its rule."""
    found = []
    for subject, value, rule in named:
        if isinstance(rule, int):
            breach = None if 0 < len(value) <= rule else limits.Breach(
                subject, f"{value!r} is {len(value)} characters; 1 to {rule}")
        else:
            breach = limits.name(subject, value, rule)
        if breach:
            found.append(Crossing(cause, breach, next_step))
    return found


_TAG_CAUSES = {contract.TAG_PREFIX: ("SUBMITTER_PREFIX", True), contract.TAG_BUCKET: ("SUBMITTER_BUCKET", True),
               contract.TAG_JOB: ("name", False), contract.TAG_SUBMISSION: ("name", False)}


def _tags(where: str, tags: Mapping[str, str]) -> list[Crossing]:
    breach = limits.tags(tags)
    if breach is None:
        return []
    key = breach.subject.removeprefix("tag ")
    cause, setting = _TAG_CAUSES.get(key, (where, False))
    return [Crossing(cause, breach, f"shorten {cause}" if cause != where else "tag with fewer, shorter tags",
                     setting=setting)]


def _policy(cause: str, subject: str, document: Mapping[str, Any], limit: int, next_step: str) -> list[Crossing]:
    count = limits.policy_chars(document)
    if count <= limit:
        return []
    detail = f"{count:,} characters without whitespace; IAM takes at most {limit:,}"
    return [Crossing(cause, limits.Breach(subject, detail), next_step)]


def _staged_uris(plan: Plan) -> list[str]:
    """URIs with the shape the staged inputs will have (distinct digests of the real length), so the roles'
    policies are measured at the size they are created with, not with the dry run's placeholders."""
    from submitter.backends import staging

    count = len(set(plan.loaded.local_inputs.values()))
    return [contract.Layout.uri(plan.bucket_or_placeholder, plan.layout.input(f"{i:0{staging.DIGEST_CHARS}x}"))
            for i in range(count)]


# ---------------------------------------------------------------------------------------------- backends

INPUTS_NEXT = "list fewer inputs: stage one directory holding them, or one S3 prefix above them"
PERMISSIONS_NEXT = "list fewer or shorter prefixes under permissions (a common parent prefix covers its children)"


def pool(plan: Plan) -> list[Crossing]:
    """The worker pool: its resources' names, the instance role's one inline policy, the job role, the group's
    overrides, and the tags on its template and group."""
    from submitter.aws import iam
    from submitter.backends.pool import resources

    built = resources.pool_plan(plan)
    names = built.names
    found = _names("name", NAME_NEXT, [
        ("SQS queue name", names.queue, limits.SQS_QUEUE_NAME),
        ("SQS queue name", names.dead_letter_queue, limits.SQS_QUEUE_NAME),
        ("launch template name", names.launch_template, limits.LAUNCH_TEMPLATE_NAME),
        ("Auto Scaling group name", names.group, limits.ASG_NAME_CHARS),
        ("security group name", names.security_group, limits.EC2_SECURITY_GROUP_NAME),
        ("IAM role name", names.role, limits.IAM_ROLE_NAME),
        ("IAM instance profile name", names.instance_profile, limits.IAM_PROFILE_NAME),
        ("IAM policy name", iam.POLICY_NAME, limits.IAM_POLICY_NAME),
    ])
    found += _policy("inputs", f"the inline policy of IAM role {names.role}", pool_policy(plan),
                     limits.IAM_ROLE_INLINE_CHARS, INPUTS_NEXT)
    if built.job_role:
        found += _names("name", NAME_NEXT, [("IAM role name", built.job_role["RoleName"], limits.IAM_ROLE_NAME)])
        found += _policy("permissions", f"the inline policy of IAM role {built.job_role['RoleName']}",
                         built.job_role["Policy"], limits.IAM_ROLE_INLINE_CHARS, PERMISSIONS_NEXT)
        found += _policy("permissions", f"the trust policy of IAM role {built.job_role['RoleName']}",
                         built.job_role["AssumeRolePolicyDocument"], limits.IAM_TRUST_POLICY_CHARS, PERMISSIONS_NEXT)
    # The spec's list too: the group takes every type of it when the market is unknown (placement/rank.py keeps
    # fewer when it is known), and a spec must not pass or fail by the day's prices.
    overrides = max(len(built.group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]),
                    len(plan.spec.resources.instance_types))
    if overrides > limits.ASG_OVERRIDES:
        found.append(Crossing("resources.instance_types", limits.Breach(
            "Auto Scaling group overrides", f"{overrides} instance types; at most {limits.ASG_OVERRIDES}"),
            f"list at most {limits.ASG_OVERRIDES} instance types"))
    for spec in built.launch_template["TagSpecifications"]:
        found += _tags(f"launch template tags ({spec['ResourceType']})", {t["Key"]: t["Value"] for t in spec["Tags"]})
    found += _tags("Auto Scaling group tags", {t["Key"]: t["Value"] for t in built.group["Tags"]})
    return found


def pool_policy(plan: Plan) -> dict[str, Any]:
    """The instance role's policy as submit creates it (its one inline policy: aws/iam.py POLICY_NAME)."""
    from submitter.backends.pool import resources

    return resources.instance_policy(plan, resources.Names.of(plan.submission_id), _staged_uris(plan))


def batch(plan: Plan) -> list[Crossing]:
    """AWS Batch: the job definition's and job's names, the array size, the job role and its policy, the tags."""
    from submitter.aws import iam
    from submitter.backends import policy
    from submitter.backends.batch import job, submit

    definition = job.job_definition(plan, "<image>", f"<role {plan.role}>")
    params = job.submit_params(plan, definition["jobDefinitionName"], submit.queue_for(plan))
    found = _names("name", NAME_NEXT, [
        ("Batch job definition name", definition["jobDefinitionName"], limits.BATCH_NAME),
        ("Batch job name", params["jobName"], limits.BATCH_NAME),
        ("Batch job queue name", params["jobQueue"], limits.BATCH_NAME),
        ("IAM role name", plan.role, limits.IAM_ROLE_NAME),
        ("IAM policy name", iam.POLICY_NAME, limits.IAM_POLICY_NAME),
    ])
    low, high = limits.BATCH_ARRAY_SIZE
    size = params.get("arrayProperties", {}).get("size")
    if size is not None and not low <= size <= high:
        found.append(Crossing("sweep", limits.Breach("Batch array size", f"{size:,} runs; {low} to {high:,}"),
                              f"split the sweep into specs of at most {high:,} runs"))
    uris = _staged_uris(plan)
    document = job.job_role_policy(plan, uris)
    alone = policy.document(policy.run_statements(plan, uris))
    cause, next_step = (("inputs", INPUTS_NEXT) if limits.policy_chars(alone) > limits.IAM_ROLE_INLINE_CHARS
                        else ("permissions", PERMISSIONS_NEXT))
    found += _policy(cause, f"the inline policy of IAM role {plan.role}", document, limits.IAM_ROLE_INLINE_CHARS,
                     next_step)
    found += _policy("name", f"the trust policy of IAM role {plan.role}", iam.trust(submit.ECS_TASKS),
                     limits.IAM_TRUST_POLICY_CHARS, NAME_NEXT)
    found += _tags("Batch job tags", definition["tags"])
    return found


BACKEND_CHECKS: dict[str, Callable[[Plan], list[Crossing]]] = {"pool": pool, "batch": batch}
