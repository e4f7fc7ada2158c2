"""The monthly budget against moto in-process: the runtime's ledger written and read through boto3 (the store
a Batch image uses) and read by the submit side; `submit` refusing past SUBMITTER_BUDGET before anything is
created, and a submission that fits carrying its budget to the workers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from submitter import budget, contract, execute
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.backends.pool import Names
from submitter.errors import UsageError
from submitter.progress import NullProgress
from submitter.runtime import ledger
from submitter.runtime.store_boto3 import Boto3Store
from submitter.settings import Settings
from submitter.spec import load

REGION = "us-east-1"
SPEC = """\
name: bexp
image:
  uri: {uri}
command: [python, train.py]
resources: {{instance_types: [c5.large]}}
limits: {{max_runtime: 2h}}
sweep: {{LR: [0.1, 0.05]}}
"""
RUN = "bexp-20261130-120000-abcdef-0"


@pytest.fixture()
def aws_env(moto_account):
    with moto_account("bbucket", "train") as (session, uri):
        yield Aws(session, REGION), uri


@pytest.fixture()
def project(tmp_path: Path, aws_env) -> Path:
    _, uri = aws_env
    (tmp_path / "job.yaml").write_text(SPEC.format(uri=f"{uri}:v1"))
    return tmp_path


def _submit(aws: Aws, project: Path, usd: float | None, mode: str = "worst"):
    settings = Settings(bucket="bbucket", region=REGION, prefix="p", budget=usd)
    return execute.submit(aws, settings, [load(project / "job.yaml")], {}, project, NullProgress(),
                          engine=_no_engine, budget_mode=mode)


def _no_engine():
    raise AssertionError("a prebuilt image needs no docker engine")


def _book(cost: float, run_id: str = RUN) -> None:
    """What a worker leaves: an attempt's entry, renewed once, through the runtime's own boto3 store."""
    entry = ledger.Ledger(Boto3Store(REGION, "bbucket"), contract.Layout("p"), run_id, 1, {"instance_id": "i-1"})
    entry.record(cost / 2)
    entry.record(cost, final=True)


def test_the_ledger_written_by_the_runtime_is_read_alike_by_both_sides(aws_env) -> None:
    aws, _ = aws_env
    _book(0.75)
    _book(0.5, run_id="bexp-20261130-120000-abcdef-1")
    layout, month = contract.Layout("p"), contract.month_of()
    keys = [o["Key"] for o in aws.session.client("s3").list_objects_v2(Bucket="bbucket", Prefix="p/ledger/")[
        "Contents"]]
    assert sorted(keys) == sorted([layout.ledger_entry(month, RUN, 1, 0.75),
                                   layout.ledger_entry(month, "bexp-20261130-120000-abcdef-1", 1, 0.5)])
    assert ledger.month_spend(Boto3Store(REGION, "bbucket"), layout) == 1.25
    assert budget.month_spend(S3.connect(aws, "bbucket"), layout, month) == 1.25
    report = budget.month_report(S3.connect(aws, "bbucket"), layout, month, 1.0)
    assert report["spent"] == 1.25 and report["reached"] is True and report["remaining"] == -0.25
    assert report["submissions"] == [{"submission_id": "bexp-20261130-120000-abcdef", "runs": 2, "attempts": 2,
                                      "cost": 1.25}]


def test_submit_refuses_past_the_budget_before_anything_is_created(aws_env, project: Path) -> None:
    aws, _ = aws_env
    _book(9.0)
    with pytest.raises(UsageError) as info:
        _submit(aws, project, usd=9.001)  # moto's spot price is $0.00001/h: the worst case is mostly EBS
    error = info.value
    assert error.exit_code == 2 and error.where == "SUBMITTER_BUDGET"
    assert "budget: $9.0010 for" in error.what and "spent $9.0000, remaining $0.0010" in error.what
    assert "this submission $" in error.what and "(worst case)" in error.what
    session = aws.session
    assert session.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert session.client("sqs").list_queues().get("QueueUrls", []) == []
    assert session.client("iam").list_roles()["Roles"] == []
    assert session.client("ec2").describe_launch_templates()["LaunchTemplates"] == []
    keys = [o["Key"] for o in session.client("s3").list_objects_v2(Bucket="bbucket").get("Contents", [])]
    assert all(k.startswith("p/ledger/") for k in keys), keys  # nothing staged


def test_a_submission_that_fits_carries_its_budget_to_the_workers(aws_env, project: Path) -> None:
    aws, _ = aws_env
    _book(1.0)
    (sub,) = _submit(aws, project, usd=100.0)
    doc = json.loads(aws.session.client("s3").get_object(
        Bucket="bbucket", Key=sub.plan.layout.submission_doc(sub.plan.submission_id))["Body"].read())
    assert doc["budget"] == {"usd": 100.0}
    assert ledger.budget_of(doc) == 100.0
    assert aws.session.client("sqs").get_queue_url(QueueName=Names.of(sub.plan.submission_id).queue)
    # Without SUBMITTER_BUDGET the document carries none, and workers check nothing.
    plan = replace(sub.plan, budget=None)
    from submitter.backends import staging

    assert "budget" not in staging.submission_doc(plan, sub.image_uri, [], {})
