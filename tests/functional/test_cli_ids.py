"""Hostile command-line arguments and strict --json, through the CLI against moto in-process: a value that cannot
be an id exits 2 naming the argument, with no traceback and no AWS call; a plan over an AWS limit is refused
before anything is created, the dry run included; --json output is always strict JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from typer.testing import CliRunner

from submitter import contract
from submitter.cli import app

BUCKET = "fids"
SUB = "fid-20261126-070000-abc123"
URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/train@sha256:" + "0" * 64
BAD = ["../../x", "a/b", "with space", "tab\tin", "esc\x1b[31m", "nul\x00x", "line\nbreak", "x" * 200,
       f"{SUB}/../../other", ".."]


@pytest.fixture()
def calls(moto_account: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """moto with a bucket; yields the AWS operations the CLI calls (botocore's, recorded at the client)."""
    made: list[str] = []
    original = BaseClient._make_api_call

    def recorded(self: Any, operation: str, params: Any) -> Any:
        made.append(operation)
        return original(self, operation, params)

    for name in ("SUBMITTER_SANDBOX", "SUBMITTER_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUBMITTER_BUCKET", BUCKET)
    monkeypatch.setenv("SUBMITTER_REGION", "us-east-1")
    monkeypatch.setenv("SUBMITTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.chdir(tmp_path)
    with moto_account(BUCKET, "train") as (session, _):
        monkeypatch.setattr(BaseClient, "_make_api_call", recorded)
        yield made
        monkeypatch.setattr(BaseClient, "_make_api_call", original)
        assert session.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
        assert session.client("sqs").list_queues().get("QueueUrls", []) == []
        assert session.client("iam").list_roles()["Roles"] == []


def _argv(command: str, value: str) -> list[str]:
    """The command line with `value` where the command takes its id (after `--`, so `-x` is not an option)."""
    if command == "submit":
        return ["submit", "job.yaml", "--id", value]
    if command == "cancel":
        return ["cancel", "--yes", "--", value]
    if command == "sandbox":
        return ["sandbox", "logs", "--", value]
    return [command, "--", value]


ARGUMENTS = {"status": "RUN|SUBMISSION|JOB", "logs": "RUN", "results": "RUN|SUBMISSION|JOB",
             "cancel": "RUN|SUBMISSION", "cost": "RUN|SUBMISSION|JOB", "ssh": "RUN", "notebook": "SPEC|RUN",
             "submit": "--id", "sandbox": "INSTANCE_ID"}


@pytest.mark.parametrize("command", list(ARGUMENTS))
def test_a_value_that_cannot_be_an_id_exits_2_naming_the_argument_before_any_aws_call(
        calls: list[str], command: str, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(f"name: fid\nimage: {{uri: '{URI}'}}\ncommand: [x]\n"
                                       "resources: {instance_types: [c5.large]}\n")
    for value in [*BAD, "-x", "--yes"]:
        result = CliRunner().invoke(app, _argv(command, value))
        assert result.exit_code == 2, (value, result.output)
        assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
        assert f"error: {ARGUMENTS[command]}: " in result.output, (value, result.output)
        assert "\x1b" not in result.output and "\x00" not in result.output  # shown escaped, never replayed
        assert calls == [], value


def test_a_well_formed_id_does_reach_aws(calls: list[str]) -> None:
    """The control: the recorder sees the calls a valid id makes (so an empty list above means none)."""
    result = CliRunner().invoke(app, ["status", f"{SUB}-0"])
    assert result.exit_code == 2 and "no run, submission or job of that name" in result.output
    assert "HeadObject" in calls


def test_a_run_id_is_not_a_submission_id_for_submit(calls: list[str], tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(f"name: fid\nimage: {{uri: '{URI}'}}\ncommand: [x]\n"
                                       "resources: {instance_types: [c5.large]}\n")
    result = CliRunner().invoke(app, ["submit", "job.yaml", "--id", f"{SUB}-3"])
    assert result.exit_code == 2 and "is not a submission id" in result.output
    other = CliRunner().invoke(app, ["submit", "job.yaml", "--id", "other-20261126-070000-abc123"])
    assert other.exit_code == 2 and "is not a submission id of job 'fid'" in other.output
    assert calls == []


# ---------------------------------------------------------------------------------------------- AWS limits


def _over_limits(tmp_path: Path) -> Path:
    types = ", ".join(["c5.large", *(f"x{i}.large" for i in range(40))])  # c5.large has a spot offer in moto
    spec = tmp_path / "job.yaml"
    spec.write_text(f"name: fid\nimage: {{uri: '{URI}'}}\ncommand: [x]\nenv: {{BIG: '{'b' * 200_000}'}}\n"
                    f"resources: {{instance_types: [{types}]}}\n")
    return spec


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_plan_over_aws_limits_is_refused_before_anything_is_created(calls: list[str], tmp_path: Path,
                                                                      dry_run: bool) -> None:
    _over_limits(tmp_path)
    result = CliRunner().invoke(app, ["submit", "job.yaml", *(["--dry-run"] if dry_run else [])])
    assert result.exit_code == 2, result.output
    assert "job.yaml: env.BIG: environment variable BIG: 200,005 bytes; at most 131,072" in result.output
    assert "job.yaml: resources.instance_types: Auto Scaling group overrides: 41 instance types" in result.output
    assert "Traceback" not in result.output
    # Only reads (the bucket, the account, prices) before the refusal; the fixture asserts nothing exists.
    assert all(op.startswith(("Head", "Get", "Describe", "List")) for op in calls), calls


# ---------------------------------------------------------------------------------------------- strict JSON


def _strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_dry_run_json_is_strict_json(calls: list[str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    result = CliRunner().invoke(app, ["submit", str(repo / "jobs" / "exp1.yaml"), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert _strict(result.stdout)["job"] == "exp1"


def test_a_non_finite_number_never_reaches_json_output(calls: list[str], moto_account: Any) -> None:
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    run = f"{SUB}-0"
    status_key = contract.Layout("submitter").status(run)  # a status document a job could have forged
    s3.put_object(Bucket=BUCKET, Key=status_key, Body=b'{"run_id": "%s", "state": "running", "cost": NaN}'
                  % run.encode())
    calls.clear()
    good = CliRunner().invoke(app, ["status", run])
    assert good.exit_code == 0, good.output
    result = CliRunner().invoke(app, ["status", run, "--json"])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "error: --json: runs[0].cost (nan) is not a finite number, which JSON cannot carry" in result.output
    s3.delete_object(Bucket=BUCKET, Key=status_key)  # the fixture's check: the bucket is as it was
    fine = CliRunner().invoke(app, ["status", "--json"])
    assert fine.exit_code == 0 and _strict(fine.stdout) == {"runs": []}


def test_well_formed_ids_pass_the_checks_unchanged() -> None:
    from submitter.cli import ids

    assert ids.run(f"{SUB}-12") == f"{SUB}-12" and ids.run(SUB) == SUB
    assert ids.run_or_submission(SUB) == SUB and ids.submission(SUB) == SUB
    assert [ids.target(v) for v in ("exp1", "a", "9-lives", SUB, f"{SUB}-0")] == ["exp1", "a", "9-lives", SUB,
                                                                                   f"{SUB}-0"]
    assert ids.instance("i-0123456789abcdef0") == "i-0123456789abcdef0"


def test_a_secret_value_over_ssms_size_is_refused_before_anything_is_created(
        calls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FID_SECRET", "s" * 5000)
    (tmp_path / "job.yaml").write_text(f"name: fid\nimage: {{uri: '{URI}'}}\ncommand: [x]\nsecrets: [FID_SECRET]\n"
                                       "resources: {instance_types: [c5.large]}\n")
    result = CliRunner().invoke(app, ["submit", "job.yaml"])
    assert result.exit_code == 2, result.output
    assert "error: secret FID_SECRET (environment or .env): 5,000 bytes; at most 4,096" in result.output
    assert "sss" not in result.output
    assert all(op.startswith(("Head", "Get", "Describe", "List")) for op in calls), calls


# ------------------------------------------------------------------------------------- hostile specs


HOSTILE_SPECS = {
    "alias bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
    "python tag": "name: !!python/object/apply:os.system ['true']\ncommand: [x]\n",
    "path trick": f"name: fid\nimage: {{uri: '{URI}'}}\ncommand: [x]\nresources: {{instance_types: [c5.large]}}\n"
                  "inputs: [{source: /etc, target: /data/../etc/cron.d/x}]\n",
    "option-like uri": "name: fid\nimage: {uri: '--privileged/x'}\ncommand: [x]\n"
                       "resources: {instance_types: [c5.large]}\n",
    "infinite cost": f"name: fid\nimage: {{uri: '{URI}'}}\ncommand: [x]\nresources: {{instance_types: [c5.large]}}\n"
                     "limits: {max_cost: .inf}\n",
}


@pytest.mark.parametrize("kind", list(HOSTILE_SPECS))
def test_a_hostile_spec_makes_no_aws_call_and_no_build(calls: list[str], tmp_path: Path, kind: str) -> None:
    (tmp_path / "job.yaml").write_text(HOSTILE_SPECS[kind])
    result = CliRunner().invoke(app, ["submit", "job.yaml"])  # not a dry run: this would build and launch
    assert result.exit_code == 2, result.output
    assert "job.yaml" in result.output and "Traceback" not in result.output
    assert calls == [], calls  # refused before the first AWS call (and the engine is unreachable: no build)
