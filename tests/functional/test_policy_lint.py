"""Every IAM document the plan produces passes parliament, a linter that carries AWS's Service Authorization
Reference: actions that exist, resources in each action's ARN format, condition keys the action takes, a
well-formed grammar. Checked for ordinary and odd settings, as built by the plan's own code and as stored in
IAM by a real submit (moto in-process), and shown to fail on policies broken on purpose.

What parliament cannot say is whether a policy is sufficient or scoped tightly enough: the sandbox's IAM
enforcement (e2e) and tests/unit/test_policy_scope.py cover that. Roles of ours only: the Batch service role is
AWS's service-linked role and the Batch hosts' permissions are AWS's managed AmazonEC2ContainerServiceforEC2Role
(their documents are AWS's), and the Batch backend registers no execution role (EC2 platform: the hosts' role
pulls the image)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from parliament import analyze_policy_string, iam_definition

from submitter import execute
from submitter.account.init import bucket_policy
from submitter.aws import iam as iam_api
from submitter.aws.session import Aws
from submitter.backends.batch import job as batch_job
from submitter.backends.batch import setup as batch_setup
from submitter.backends.batch.submit import ECS_TASKS
from submitter.backends.pool import pool_plan
from submitter.backends.pool.resources import instance_policy
from submitter.plan import Plan, PriceLookup, make_plan
from submitter.progress import NullProgress
from submitter.settings import Settings
from submitter.spec import load

NOW = datetime(2026, 11, 26, 7, 0, 0, tzinfo=timezone.utc)
ACCOUNT = "123456789012"
REGION = "us-east-1"

# Findings ignored as noise: none. The candidate was RESOURCE_STAR for the actions that only take `*`
# (ecr:GetAuthorizationToken, ec2:DescribeSpotPriceHistory), but parliament raises it only for an action that has
# a resource type in the Service Authorization Reference (statement.py: resource-type-less actions are expected
# to have `*`); test_every_star_resource_is_for_an_action_without_resource_types verifies ours against
# parliament's own data, so any finding at all fails the test.
IGNORED: frozenset[str] = frozenset()


def lint(document: dict[str, Any]) -> list[str]:
    """parliament's findings for `document`. Its core auditors only: the community ones judge design, not
    validity, and flag what the worker must do by design (CREDENTIALS_EXPOSURE for ecr:GetAuthorizationToken and
    sts:AssumeRole: the agent logs in to pull the image and hands the container its job role's credentials)."""
    found = analyze_policy_string(json.dumps(document)).findings
    return [f"{f.issue}: {f.detail} at {f.location}" for f in found if f.issue not in IGNORED]


def lint_trust(document: dict[str, Any], role_arn: str) -> list[str]:
    """A trust policy is the resource policy of its role, with the role left implicit; parliament expects a
    Resource element (it reports MALFORMED without one and checks nothing further), so each statement is linted
    with the role's ARN as its resource: then its principal, its action and the action's ARN format are checked."""
    statements = [{**s, "Resource": role_arn} for s in document["Statement"]]
    return lint({**document, "Statement": statements})


def _role_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


# ------------------------------------------------------------------------------------------- the plan's own code

CASES: dict[str, dict[str, Any]] = {
    "cpu-one-run": {"types": "c5.large"},
    "gpu-sweep-secrets-inputs": {"types": "g4dn.xlarge, g5.xlarge", "sweep": 12, "inputs": True, "secrets": True},
    "longest-names-1000-runs": {"name": "n" * 40, "sweep": 1000, "inputs": True, "secrets": True,
                                "prefix": "p" * 60 + "/" + "q" * 67, "bucket": "b" * 63},
    "dots-and-dashes": {"name": "a-b-c", "sweep": 3, "prefix": "team.ml/run-s.v2/a_b", "bucket": "my.data.bkt-1",
                        "s3_inputs": ["s3://other.bucket-x/ds.v1/train/", "s3://plain/x"], "permissions": True},
    "many-prefixes-gpu": {"types": "g4dn.xlarge", "sweep": 2, "permissions": True, "bucket": "a.b.c"},
    "dry-run-no-account": {"sweep": 2, "inputs": True, "secrets": True, "permissions": True, "account": None},
}


def _permissions() -> str:
    """Twenty prefixes per list (the spec's maximum) over buckets with dots and dashes, some keys with dots."""
    read = [f"s3://data.set-{i % 4}.example/shard.{i}/" for i in range(20)]
    write = [f"s3://team-out.{i % 3}/runs/v{i}.x/" for i in range(19)] + ["s3://whole.bucket"]
    return f"permissions:\n  s3_read: {json.dumps(read)}\n  s3_write: {json.dumps(write)}\n"


def _plan(tmp_path: Path, backend: str, name: str = "exp1", types: str = "c5.large", sweep: int = 1,
          inputs: bool = False, secrets: bool = False, prefix: str = "submitter", bucket: str = "bkt",
          s3_inputs: tuple[str, ...] | list[str] = (), permissions: bool = False,
          account: str | None = ACCOUNT) -> Plan:
    text = f"name: {name}\ncommand: [python, train.py]\nresources: {{instance_types: [{types}]}}\n"
    if sweep > 1:
        text += f"sweep: {{LR: [{', '.join(str(i) for i in range(sweep))}]}}\n"
    sources = [{"source": uri, "target": f"/data/s3-{i}"} for i, uri in enumerate(s3_inputs)]
    if inputs:
        (tmp_path / "data").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "a.txt").write_text("a")
        sources.append({"source": "./data", "target": "/data/train"})
    if sources:
        text += f"inputs: {json.dumps(sources)}\n"
    if secrets:
        text += "secrets: [WANDB_API_KEY, HF_TOKEN]\n"
    if permissions:
        text += _permissions()
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Dockerfile.train").write_text("FROM python:3.11-slim\n")
    (tmp_path / "job.yaml").write_text(text)
    return make_plan(load(tmp_path / "job.yaml"), Settings(bucket=bucket, prefix=prefix, region=REGION),
                     PriceLookup(None, "unknown"), now=NOW, token="abc123", account=account, backend=backend)


def _staged(plan: Plan) -> list[str]:
    """What staging returns for the plan's local inputs: one content-addressed prefix per input."""
    return [f"s3://{plan.bucket}/{plan.layout.input(f'{i:064x}')}" for i, _ in enumerate(plan.loaded.local_inputs)]


def _documents(plan: Plan) -> dict[str, dict[str, Any]]:
    """Every permissions policy of `plan`'s backend, before staging (what --dry-run shows) and after it."""
    if plan.backend == "batch":
        docs = {"batch job role": batch_job.job_role_policy(plan, _staged(plan)),
                "batch job role, dry run": batch_job.job_role_policy(plan)}
    else:
        pool = pool_plan(plan)
        docs = {"instance role": instance_policy(plan, pool.names, _staged(plan)),
                "instance role, dry run": pool.iam_policy}
        if pool.job_role is not None:
            docs["job role"] = pool.job_role["Policy"]
    return docs


@pytest.mark.parametrize("backend", ["pool", "batch"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_the_plan_produces_passes_parliament(tmp_path: Path, case: str, backend: str) -> None:
    plan = _plan(tmp_path, backend, **CASES[case])
    documents = _documents(plan)
    assert documents and all(d["Statement"] for d in documents.values())
    assert plan.account.isdigit() or plan.account in json.dumps(documents)  # _with_account has work to do
    for what, document in documents.items():
        assert lint(_with_account(document, plan)) == [], what


def _with_account(document: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """A plan made without credentials (a dry run) spells the account as the policy variable AWS fills in at
    evaluation; parliament's ARN check takes only 12 digits there, so it is given one. A submit always knows the
    account (execute.submit), so what IAM receives has no variable."""
    if plan.account.isdigit():
        return document
    text = json.dumps(document)
    return dict(json.loads(text.replace(plan.account, ACCOUNT)))


@pytest.mark.parametrize("case", ["cpu-one-run", "dots-and-dashes", "longest-names-1000-runs"])
def test_every_trust_policy_passes_parliament(tmp_path: Path, case: str) -> None:
    plan = _plan(tmp_path, "pool", **{**CASES[case], "permissions": True})
    pool = pool_plan(plan)
    assert pool.job_role is not None
    trusts = {
        "instance role (pool workers, Batch hosts)": (iam_api.trust(iam_api.EC2), _role_arn(pool.names.role)),
        "batch job role": (iam_api.trust(ECS_TASKS), _role_arn(plan.role)),
        "job role": (pool.job_role["AssumeRolePolicyDocument"], pool.job_role["Arn"]),
    }
    for what, (document, arn) in trusts.items():
        assert lint_trust(document, arn) == [], what


@pytest.mark.parametrize("bucket", ["bkt", "my.data.bucket-1", "b" * 63, "submitter-123456789012-us-east-1-ab12cd"])
def test_the_bucket_policy_init_writes_passes_parliament(bucket: str) -> None:
    assert lint(bucket_policy(bucket)) == []


# ------------------------------------------------------------------------------ as IAM stores them after a submit

SPEC = """\
name: plint
image:
  uri: {uri}
command: [python, train.py]
resources:
  instance_types: [{types}]
  backend: {backend}
inputs: [{{source: ./data, target: /data/train}}, {{source: "s3://other.bucket-x/ds.v1/", target: /data/s3}}]
secrets: [WANDB_API_KEY]
sweep: {{LR: [0.1, 0.01, 0.001]}}
"""


@pytest.fixture()
def aws_env(moto_account):
    config = {"batch": {"use_docker": False}, "iam": {"load_aws_managed_policies": True}}
    with moto_account("plint.bucket", "plint", config=config) as (session, uri):
        yield Aws(session, REGION, bucket="plint.bucket"), uri


def test_the_roles_a_submit_creates_pass_parliament_as_iam_stores_them(aws_env, tmp_path: Path) -> None:
    """Pool and Batch submissions with inputs, secrets and permissions, after `init --batch`: every role named
    submitter-* that IAM now holds, its inline policy and its trust policy."""
    aws, uri = aws_env
    settings = Settings(bucket="plint.bucket", region=REGION, prefix="team.ml/p-1", batch_max_vcpus=16)
    batch_setup.ensure_batch(aws, settings, lambda _: None)
    for backend, types in (("pool", "c5.large"), ("batch", "g4dn.xlarge")):
        project = tmp_path / backend
        (project / "data").mkdir(parents=True)
        (project / "data" / "a.txt").write_text("a")
        (project / "job.yaml").write_text(SPEC.format(uri=f"{uri}:v1", types=types, backend=backend)
                                          + _permissions())
        execute.submit(aws, settings, [load(project / "job.yaml")], {"WANDB_API_KEY": "x"}, project,
                       NullProgress(), engine=lambda: None)

    iam = aws.session.client("iam")
    roles = [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("submitter-")]
    inline = {r["RoleName"]: iam.get_role_policy(RoleName=r["RoleName"], PolicyName=name)["PolicyDocument"]
              for r in roles for name in iam.list_role_policies(RoleName=r["RoleName"])["PolicyNames"]}
    # The pool's instance role and job role, the Batch job role, the Batch hosts' role (managed policy only).
    assert len(roles) == 4 and len(inline) == 3, sorted(r["RoleName"] for r in roles)
    for name, document in inline.items():
        assert lint(document) == [], name
    for role in roles:
        assert lint_trust(role["AssumeRolePolicyDocument"], role["Arn"]) == [], role["RoleName"]


# ----------------------------------------------------------------------------------------------- the check bites

GOOD = {"Sid": "Ok", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::bkt/p/*"]}


@pytest.mark.parametrize(("broken", "issue"), [
    ({"Action": ["s3:GetObjects"]}, "UNKNOWN_ACTION"),  # misspelt
    ({"Action": ["sqs:RecieveMessage"], "Resource": ["arn:aws:sqs:us-east-1:123456789012:q"]}, "UNKNOWN_ACTION"),
    ({"Action": ["s3:PutObject"], "Resource": ["arn:aws:s3:::bkt"]}, "RESOURCE_MISMATCH"),  # object action, bucket
    ({"Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::bkt/p/*"]}, "RESOURCE_MISMATCH"),  # the reverse
    ({"Action": ["sqs:ReceiveMessage"], "Resource": ["arn:aws:sns:us-east-1:123456789012:q"]}, "RESOURCE_MISMATCH"),
    ({"Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::bkt"],
      "Condition": {"StringLike": {"s3:prefixes": ["p/*"]}}}, "UNKNOWN_CONDITION_FOR_ACTION"),  # bad condition key
    ({"Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::bkt/p/*"],
      "Condition": {"StringLikes": {"s3:prefix": ["p/*"]}}}, "UNKNOWN_OPERATOR"),
    ({"Effect": "Permit"}, "MALFORMED"),
    ({"Sid": "Own-Queue"}, "INVALID_SID"),
    ({"Resources": ["arn:aws:s3:::bkt/p/*"]}, "MALFORMED"),
    ({"Action": ["ecr:BatchGetImage"], "Resource": ["*"]}, "RESOURCE_STAR"),  # has a resource type: scope it
])
def test_a_broken_policy_fails_the_lint(broken: dict[str, Any], issue: str) -> None:
    statement = {k: v for k, v in {**GOOD, **broken}.items() if not (k == "Resource" and "Resources" in broken)}
    findings = lint({"Version": "2012-10-17", "Statement": [GOOD | {"Sid": "Good"}, statement]})
    assert any(f.startswith(issue + ":") for f in findings), findings


def test_a_broken_trust_policy_fails_the_lint() -> None:
    arn = _role_arn("submitter-x")
    good = iam_api.trust(iam_api.EC2)
    assert lint_trust(good, arn) == []
    for principal, action in (({"AWS": "arn:aws:iam::12345:role/x"}, "sts:AssumeRole"),
                              ({"Service": iam_api.EC2}, "sts:AssumeRoles")):
        document = {**good, "Statement": [{**good["Statement"][0], "Principal": principal, "Action": action}]}
        assert lint_trust(document, arn) != [], (principal, action)


def test_every_star_resource_is_for_an_action_without_resource_types(tmp_path: Path) -> None:
    """`Resource: *` only where the Service Authorization Reference (parliament's copy) lists no resource type for
    the action, i.e. where nothing narrower exists."""
    documents = [d for backend in ("pool", "batch") for d in _documents(
        _plan(tmp_path / backend, backend, **CASES["gpu-sweep-secrets-inputs"], permissions=True)).values()]
    starred = {a for d in documents for s in d["Statement"] if s["Resource"] == ["*"] for a in s["Action"]}
    assert starred == {"ec2:DescribeSpotPriceHistory", "ecr:GetAuthorizationToken"}
    services = {s["prefix"]: s for s in iam_definition}
    for action in sorted(starred):
        prefix, name = action.split(":")
        (privilege,) = [p for p in services[prefix]["privileges"] if p["privilege"] == name]
        assert [t["resource_type"] for t in privilege["resource_types"]] in ([], [""]), action
