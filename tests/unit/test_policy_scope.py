"""The S3 scope of what a run may reach (backends/policy.py, the instance role and the Batch job role): its own
submission's keys with delimiters, only its own staged inputs, and writes only where the runtime writes."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from submitter.backends import policy
from submitter.backends.batch.job import job_role_policy
from submitter.backends.pool import pool_plan
from submitter.backends.pool.resources import instance_policy
from submitter.plan import PriceLookup, make_plan
from submitter.sandbox.iam import matches
from submitter.settings import Settings
from submitter.spec import load, submission_id

NOW = datetime(2026, 11, 26, 7, 0, 0, tzinfo=timezone.utc)
IAM_ROLE_INLINE_LIMIT = 10_240  # characters of a role's inline policies, whitespace not counted


def _plan(tmp_path: Path, name: str = "exp1", sweep: int = 12, inputs: bool = False, prefix: str = "submitter",
          bucket: str = "bkt", secrets: bool = False):
    values = ", ".join(str(i) for i in range(sweep))
    text = f"name: {name}\ncommand: [python, train.py]\nresources: {{instance_types: [c5.large]}}\n"
    if sweep > 1:
        text += f"sweep: {{LR: [{values}]}}\n"
    if inputs:
        (tmp_path / "data").mkdir(parents=True)
        (tmp_path / "data" / "a.txt").write_text("a")
        text += "inputs: [{source: ./data, target: /data/train}]\n"
    if secrets:
        text += "secrets: [WANDB_API_KEY]\n"
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Dockerfile.train").write_text("FROM python:3.11-slim\n")
    (tmp_path / "job.yaml").write_text(text)
    return make_plan(load(tmp_path / "job.yaml"), Settings(bucket=bucket, prefix=prefix),  # type: ignore[arg-type]
                     PriceLookup(None, "unknown"), now=NOW, token="abc123")


def _arn(plan, key: str) -> str:
    return f"arn:aws:s3:::{plan.bucket}/{key}"


def _allowed(document: dict, action: str, arn: str) -> bool:
    """As IAM decides: some Allow statement covers it and no Deny statement does (an explicit deny wins)."""
    def covered(effect: str) -> bool:
        return any(action in s["Action"] and any(matches(r, arn) for r in s["Resource"])
                   for s in document["Statement"] if s["Effect"] == effect)

    return covered("Allow") and not covered("Deny")


def test_the_role_writes_its_runs_results_and_nothing_submit_wrote(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    doc, layout, sub = pool_plan(plan).iam_policy, plan.layout, plan.submission_id
    for run in (plan.runs[0].run_id, plan.runs[11].run_id):
        for key in (layout.status(run), layout.chunk(run, 3), layout.container_log(run), layout.agent_log(run),
                    layout.outputs(run) + "model.pt", layout.checkpoints(run) + "step-9/w.pt"):
            assert _allowed(doc, "s3:PutObject", _arn(plan, key)), key
        for key in (layout.run_spec(run), layout.run_cancel(run)):
            assert _allowed(doc, "s3:GetObject", _arn(plan, key)) and not _allowed(doc, "s3:PutObject",
                                                                                   _arn(plan, key)), key
    assert _allowed(doc, "s3:PutObject", _arn(plan, layout.instance_report(sub, "i-0abc")))
    for key in (layout.runtime(sub), layout.submission_doc(sub), layout.queued(sub), layout.batch_record(sub),
                layout.batch_runs(sub), layout.submission_cancel(sub)):
        assert _allowed(doc, "s3:GetObject", _arn(plan, key)), key
        assert not _allowed(doc, "s3:PutObject", _arn(plan, key)), key


@pytest.mark.parametrize("other_name", ["exp1-20261126-070000-abc123", "exp1-20261126-070000-abc123-1",
                                        "exp1-20261126-070000-abc123-12", "exp1-20261126-070000-abc123-x"])
def test_no_other_submission_is_reached_whatever_its_job_is_named(tmp_path: Path, other_name: str) -> None:
    plan = _plan(tmp_path)
    doc = pool_plan(plan).iam_policy
    # A job named after ours (plus a suffix) has ids that start with ours: `runs/SUB*` reached them.
    others = [submission_id(other_name, NOW, token) for token in ("abc123", "000000", "123456")]
    for other in others:
        for run in (other, f"{other}-0", f"{other}-999"):
            for action in ("s3:GetObject", "s3:PutObject"):
                assert not _allowed(doc, action, _arn(plan, plan.layout.status(run))), (action, run)
        assert not _allowed(doc, "s3:GetObject", _arn(plan, plan.layout.submission_doc(other)))
    assert not _allowed(doc, "s3:GetObject", _arn(plan, plan.layout.status(plan.submission_id + "-100")))


def test_only_the_staged_inputs_of_this_submission(tmp_path: Path) -> None:
    plan = _plan(tmp_path, inputs=True)
    layout = plan.layout
    mine = f"s3://{plan.bucket}/{layout.input('d' * 32)}"
    doc = instance_policy(plan, pool_plan(plan).names, [mine])
    assert _allowed(doc, "s3:GetObject", _arn(plan, layout.input("d" * 32) + "a.txt"))
    assert not _allowed(doc, "s3:GetObject", _arn(plan, layout.input("e" * 32) + "a.txt"))
    assert not _allowed(doc, "s3:PutObject", _arn(plan, layout.input("d" * 32) + "a.txt"))
    assert job_role_policy(plan, [mine])["Statement"][2]["Resource"] == [_arn(plan, layout.input("d" * 32) + "*")]
    # Before staging (the dry-run plan) the digest is not known: a placeholder that matches no real digest.
    shown = json.dumps(pool_plan(plan).iam_policy)
    assert "<sha256 of ./data>" in shown
    assert not _allowed(pool_plan(plan).iam_policy, "s3:GetObject", _arn(plan, layout.input("d" * 32) + "a.txt"))
    # No local input: no staged-input statement at all (it used to be every submission's inputs).
    assert "StagedInputs" not in {s["Sid"] for s in pool_plan(_plan(tmp_path / "x", sweep=1)).iam_policy["Statement"]}


def test_a_1000_run_sweep_with_the_longest_names_fits_the_inline_limit(tmp_path: Path) -> None:
    plan = _plan(tmp_path, name="n" * 40, sweep=1000, inputs=True, prefix="p" * 60 + "/" + "q" * 67,
                 bucket="b" * 63, secrets=True)
    doc = instance_policy(plan, pool_plan(plan).names, [f"s3://{plan.bucket}/{plan.layout.input('f' * 32)}"])
    assert len(json.dumps(doc, separators=(",", ":"))) < IAM_ROLE_INLINE_LIMIT
    assert policy.run_patterns(plan) == [f"{plan.submission_id}-{'?' * n}" for n in (1, 2, 3)]
    assert all(_allowed(doc, "s3:PutObject", _arn(plan, plan.layout.status(r.run_id))) for r in plan.runs)
