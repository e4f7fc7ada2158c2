"""`rerun` and `diff` against moto in-process: a rerun reproduces the record (image digest, env, sweep values,
staged and pinned inputs) through the submit pipeline, and what cannot be reproduced any more (an image digest
gone from the repository, a changed S3 input, an unknown --set name) is refused with exit 2 before anything is
created."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from submitter import contract, diff, execute
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.cli import app
from submitter.progress import NullProgress
from submitter.settings import Settings
from submitter.spec import load

REGION = "us-east-1"
BUCKET = "rbucket"
DATA = "rdata-src"
SPEC = """\
name: rexp
image: {{uri: {uri}}}
command: [python, train.py]
env: {{EPOCHS: "2", SEED: "0"}}
resources: {{instance_types: [c5.large, m5.large], volume_gb: 5}}
inputs:
  - {{source: ./data, target: /data/train}}
  - {{source: "s3://{data}/sets/labels.csv", target: /data/labels.csv}}
  - {{source: "s3://{data}/sets/images/", target: /data/images}}
checkpoints: /checkpoints
limits: {{max_runtime: 20m, max_cost: 2.5}}
sweep: {{LR: ["0.1", "0.05"]}}
"""


@pytest.fixture()
def account(moto_account, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("SUBMITTER_BUCKET", BUCKET)
    monkeypatch.setenv("SUBMITTER_PREFIX", "p")
    monkeypatch.setenv("SUBMITTER_REGION", REGION)
    monkeypatch.setenv("SUBMITTER_HOME", str(tmp_path / "home"))
    with moto_account(BUCKET, "train") as (session, uri):
        s3 = session.client("s3")
        s3.create_bucket(Bucket=DATA)
        s3.put_object(Bucket=DATA, Key="sets/labels.csv", Body=b"0\n1\n")
        s3.put_object(Bucket=DATA, Key="sets/images/a.bin", Body=b"aaa")
        project = tmp_path / "project"
        (project / "data").mkdir(parents=True)
        (project / "data" / "train.csv").write_text("1,2,0\n")
        (project / "job.yaml").write_text(SPEC.format(uri=f"{uri}:v1", data=DATA))
        yield Aws(session, REGION), project


def _submitted_run(aws: Aws, project: Path) -> str:
    settings = Settings(bucket=BUCKET, region=REGION, prefix="p")
    (sub,) = execute.submit(aws, settings, [load(project / "job.yaml")], {}, project, NullProgress(),
                            engine=_no_engine)
    return sub.plan.runs[1].run_id  # LR=0.05


def _no_engine() -> Any:
    raise AssertionError("a recorded digest needs no docker engine")


def _created(aws: Aws) -> dict[str, Any]:
    """Everything a submission creates, to show that a refusal created none of it."""
    s = aws.session
    s3 = s.client("s3")
    return {
        "submissions": sorted(S3(s3, BUCKET).prefixes("p/submissions/")),
        "queues": sorted(s.client("sqs").list_queues().get("QueueUrls", [])),
        "groups": [g["AutoScalingGroupName"] for g in
                   s.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]],
        "roles": sorted(r["RoleName"] for r in s.client("iam").list_roles()["Roles"]),
        "templates": [t["LaunchTemplateName"] for t in s.client("ec2").describe_launch_templates()["LaunchTemplates"]],
    }


def _record(aws: Aws, run_id: str) -> dict[str, Any]:
    body = aws.session.client("s3").get_object(Bucket=BUCKET, Key=contract.Layout("p").run_spec(run_id))["Body"]
    return dict(json.loads(body.read()))


def test_the_record_pins_inputs_and_a_rerun_reproduces_it_without_the_spec_file(account: Any) -> None:
    aws, project = account
    original = _submitted_run(aws, project)
    record = _record(aws, original)
    by_target = {i["target"]: i for i in record["inputs"]}
    assert len(by_target["/data/train"]["digest"]) == 32  # staged by content digest
    assert by_target["/data/labels.csv"]["pin"]["etag"] and by_target["/data/labels.csv"]["pin"]["size"] == 4
    assert by_target["/data/images"]["pin"]["objects"] == 1
    (project / "job.yaml").unlink()  # nothing local is read from here on

    before = _created(aws)
    dry = CliRunner().invoke(app, ["rerun", original, "--set", "EPOCHS=3", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"rerun of {original}" in dry.stdout and record["image"] in dry.stdout
    assert "EPOCHS=3 LR=0.05 SEED=0" in dry.stdout and "--set EPOCHS=3 (the run had 2)" in dry.stdout
    assert _created(aws) == before

    result = CliRunner().invoke(app, ["rerun", original, "--set", "LR=0.2", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["reproduces"] == original
    assert out["overrides"] == {"env": {"LR": {"was": "0.05", "now": "0.2"}}}
    (new_run,) = out["runs"]
    again = _record(aws, new_run)
    assert again["image"] == record["image"] and "@sha256:" in again["image"]
    assert again["command"] == record["command"]
    assert again["env"] == {**record["env"], "LR": "0.2"} and again["sweep"] == {"LR": "0.2"}
    assert again["spec"]["limits"] == record["spec"]["limits"]
    assert again["reproduces"] == original and again["git"] == record["git"]
    assert [(i["target"], i.get("digest"), i["uri"]) for i in again["inputs"]] == \
        [(i["target"], i.get("digest"), i["uri"]) for i in record["inputs"]]
    # The new submission's role reads the staged digest it reuses, and not the whole bucket.
    roles = [r["RoleName"] for r in aws.session.client("iam").list_roles()["Roles"]
             if out["submission_id"] in r["RoleName"]]
    iam = aws.session.client("iam")
    (name,) = iam.list_role_policies(RoleName=roles[0])["PolicyNames"]
    statements = {s["Sid"]: s for s in iam.get_role_policy(RoleName=roles[0], PolicyName=name)["PolicyDocument"][
        "Statement"]}
    staged = contract.Layout("p").input(by_target["/data/train"]["digest"])
    assert statements["StagedInputs"]["Resource"] == [f"arn:aws:s3:::{BUCKET}/{staged}*"]
    assert not any(BUCKET in arn for arn in statements["ReadS3Inputs"]["Resource"]), statements["ReadS3Inputs"]

    s3 = S3(aws.session.client("s3"), BUCKET)
    layout = contract.Layout("p")
    s3.put_bytes(layout.final_metrics(original), b'{"accuracy": 0.9, "history": [1, 2]}')
    s3.put_bytes(layout.final_metrics(new_run), b'{"accuracy": 0.8, "history": [1, 2]}')
    compared = diff.compare(diff.read_side(s3, layout, original), diff.read_side(s3, layout, new_run))
    assert compared["experiment_differs"] == ["sweep.LR"]
    assert "metrics.accuracy" in compared["outcome_differs"]
    assert not compared["same_experiment"]
    shown = CliRunner().invoke(app, ["diff", original, new_run])
    assert shown.exit_code == 0, shown.output
    assert "different experiments: 1 field(s) differ: sweep.LR" in shown.stdout
    assert f"B reproduces {original}, with LR=0.2 (was 0.05)" in shown.stdout

    same = CliRunner().invoke(app, ["rerun", original, "--json"])
    assert same.exit_code == 0, same.output
    twin = json.loads(same.stdout)["runs"][0]
    verdict = json.loads(CliRunner().invoke(app, ["diff", original, twin, "--json"]).stdout)
    assert verdict["same_experiment"] is True and verdict["experiment_differs"] == []


def test_a_rerun_whose_image_digest_is_gone_is_refused_before_anything_is_created(account: Any) -> None:
    aws, project = account
    original = _submitted_run(aws, project)
    digest = _record(aws, original)["image"].partition("@")[2]
    aws.session.client("ecr").batch_delete_image(repositoryName="train", imageIds=[{"imageDigest": digest}])
    before = _created(aws)
    for args in (["rerun", original], ["rerun", original, "--dry-run"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"run {original}: image" in result.output and digest in result.output
        assert "the digest is gone from the repository" in result.output
        assert "Traceback" not in result.output
    assert _created(aws) == before


@pytest.mark.parametrize("change", ["object", "prefix"])
def test_a_rerun_whose_s3_input_changed_is_refused_before_anything_is_created(account: Any, change: str) -> None:
    aws, project = account
    original = _submitted_run(aws, project)
    s3 = aws.session.client("s3")
    if change == "object":
        s3.put_object(Bucket=DATA, Key="sets/labels.csv", Body=b"0\n1\n2\n")
        named = f"s3://{DATA}/sets/labels.csv"
    else:
        s3.put_object(Bucket=DATA, Key="sets/images/b.bin", Body=b"bbb")
        named = f"s3://{DATA}/sets/images/"
    before = _created(aws)
    result = CliRunner().invoke(app, ["rerun", original])
    assert result.exit_code == 2, result.output
    assert f"input {named}" in result.output and "changed since the run" in result.output
    assert _created(aws) == before


def test_a_rerun_whose_staged_input_is_gone_is_refused(account: Any) -> None:
    aws, project = account
    original = _submitted_run(aws, project)
    (staged,) = [i for i in _record(aws, original)["inputs"] if i.get("digest")]
    s3 = aws.session.client("s3")
    s3.delete_object(Bucket=BUCKET, Key=contract.Layout("p").input_complete(staged["digest"]))
    result = CliRunner().invoke(app, ["rerun", original])
    assert result.exit_code == 2, result.output
    assert "input /data/train" in result.output and "gone or incomplete" in result.output


def test_set_of_a_name_the_run_did_not_have_is_refused_naming_the_names_it_had(account: Any) -> None:
    aws, project = account
    original = _submitted_run(aws, project)
    before = _created(aws)
    result = CliRunner().invoke(app, ["rerun", original, "--set", "LRR=0.3"])
    assert result.exit_code == 2, result.output
    assert "--set LRR" in result.output and "EPOCHS, LR, SEED" in result.output
    bad_type = CliRunner().invoke(app, ["rerun", original, "--instance-types", "c5.large,t4g.small"])
    assert bad_type.exit_code == 2 and "--instance-types" in bad_type.output, bad_type.output
    assert _created(aws) == before


def test_a_rerun_of_a_rerun_reuses_the_same_staged_and_pinned_inputs(account: Any) -> None:
    aws, project = account
    original = _submitted_run(aws, project)
    first = json.loads(CliRunner().invoke(app, ["rerun", original, "--set", "EPOCHS=3", "--json"]).stdout)["runs"][0]
    result = CliRunner().invoke(app, ["rerun", first, "--json"])
    assert result.exit_code == 0, result.output
    second = _record(aws, json.loads(result.stdout)["runs"][0])
    assert second["reproduces"] == first and second["env"]["EPOCHS"] == "3"
    assert second["git"] == _record(aws, original)["git"]  # the source behind the digest, however many reruns on
    assert [(i["target"], i.get("digest"), i.get("pin")) for i in second["inputs"]] == \
        [(i["target"], i.get("digest"), i.get("pin")) for i in _record(aws, original)["inputs"]]
