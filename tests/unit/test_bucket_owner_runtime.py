"""The instance side names the bucket's owner: the boot script fetches the runtime with it and hands it to the
agent, and the runtime's `aws s3api` calls on our bucket carry it (a fake `aws` on PATH records the argv)."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

from submitter.backends.batch import job
from submitter.backends.pool import pool_plan
from submitter.plan import PriceLookup, make_plan
from submitter.runtime import artefact, pool
from submitter.runtime.store import CliStore
from submitter.settings import Settings
from submitter.spec import load

ACCOUNT = "123456789012"
SPEC = "name: exp1\ncommand: [python]\nresources: {instance_types: [c5.large], max_price: 0.1}\n"


@pytest.fixture()
def fake_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `aws` that records its argv (one JSON list a line) and answers an empty listing."""
    log = tmp_path / "argv.jsonl"
    script = tmp_path / "bin" / "aws"
    script.parent.mkdir()
    script.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                      f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\nprint('{{}}')\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_s3api_calls_on_our_bucket_name_the_owner(fake_aws: Path) -> None:
    store = CliStore("us-east-1", "ours", ACCOUNT)
    assert store.exists("p/runs/r/status.json")
    assert store.keys("p/runs/r/") == []
    head, listing = _calls(fake_aws)
    assert head[-2:] == ["--expected-bucket-owner", ACCOUNT] and "head-object" in head
    assert listing[-2:] == ["--expected-bucket-owner", ACCOUNT] and "list-objects-v2" in listing


def test_other_buckets_and_other_services_are_left_alone() -> None:
    store = CliStore("us-east-1", "ours", ACCOUNT)
    theirs = ("s3api", "list-objects-v2", "--bucket", "dataset", "--prefix", "x/")
    assert store.owned(theirs) == theirs
    assert store.owned(("sqs", "get-queue-url", "--queue-name", "ours")) == ("sqs", "get-queue-url", "--queue-name",
                                                                             "ours")
    assert store.owned(("s3api", "head-object", "--bucket")) == ("s3api", "head-object", "--bucket")
    unchecked = CliStore("us-east-1", "ours")  # an older boot script passed no owner
    assert unchecked.owned(("s3api", "head-object", "--bucket", "ours")) == ("s3api", "head-object", "--bucket", "ours")


def test_the_agent_takes_the_owner_from_the_boot_script() -> None:
    args = pool.parse_args(["--submission", "s", "--bucket", "b", "--group", "g", "--instance-id", "i",
                            "--region", "r", "--bucket-owner", ACCOUNT])
    assert args.bucket_owner == ACCOUNT
    assert pool.parse_args(["--submission", "s", "--bucket", "b", "--group", "g", "--instance-id", "i",
                            "--region", "r"]).bucket_owner == ""


def _plan(tmp_path: Path, account: str | None):
    (tmp_path / "Dockerfile.train").write_text("FROM scratch\n")
    (tmp_path / "job.yaml").write_text(SPEC)
    return make_plan(load(tmp_path / "job.yaml"), Settings(bucket="bkt"), PriceLookup(None, "unknown"),
                     now=datetime(2026, 11, 26, tzinfo=timezone.utc), token="abc123", account=account)


def test_the_boot_script_fetches_the_runtime_naming_the_owner_and_passes_it_on(tmp_path: Path) -> None:
    plan = _plan(tmp_path, ACCOUNT)
    text = pool_plan(plan).user_data
    assert f"BUCKET_OWNER={ACCOUNT}" in text
    assert 'aws s3api get-object --bucket "$BUCKET"' in text and '--expected-bucket-owner "$BUCKET_OWNER"' in text
    assert 'aws s3 cp --only-show-errors "$RUNTIME_URI"' not in text, "the high-level cp cannot name the owner"
    assert '--bucket-owner "$BUCKET_OWNER"' in text


def test_without_credentials_the_host_reads_its_account_from_imds(tmp_path: Path) -> None:
    plan = _plan(tmp_path, None)  # a dry run: the account is a policy variable
    text = pool_plan(plan).user_data
    assert "BUCKET_OWNER=''" in text and "dynamic/instance-identity/document" in text
    assert artefact.user_data({"SUBMISSION": "s", "BUCKET": "b", "PREFIX": "p", "GROUP": "g",
                               "DEADMAN_MINUTES": 1, "RUNTIME_SHA256": "x"}).count("BUCKET_OWNER=''") == 1


def test_a_batch_job_definition_carries_the_owner(tmp_path: Path) -> None:
    definition = job.job_definition(_plan(tmp_path, ACCOUNT), "img@sha256:x", "arn:aws:iam::1:role/r")
    env = {e["name"]: e["value"] for e in definition["containerProperties"]["environment"]}
    assert env["SUBMITTER_BUCKET_OWNER"] == ACCOUNT
