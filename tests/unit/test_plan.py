"""The pure parts: sweep expansion, content-hash tags, the boot script, placement, the pool's part of the plan
(names, launch, policy), settings."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from submitter import backends, context
from submitter import settings as settings_mod
from submitter.aws.ec2 import SpotPrice
from submitter.backends.pool import Names, pool_plan
from submitter.errors import CapacityError, SettingsError, UsageError
from submitter.plan import PriceLookup, make_plan
from submitter.runtime import artefact
from submitter.settings import Settings
from submitter.spec import JobSpec, expand, load, submission_id

SHA = "0" * 64
NOW = datetime(2026, 11, 26, 7, 0, 0, tzinfo=timezone.utc)
SPEC = """\
name: exp1
command: [python, train.py]
env: {EPOCHS: 3}
resources:
  instance_types: [c5.large, m5.large]
  max_price: 0.05
limits: {max_runtime: 1h, max_cost: 2}
sweep:
  LR: [0.1, 0.01]
  BATCH: [32, 64, 128]
queue: {max_workers: 2}
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile.train").write_text("FROM python:3.11-slim\nCOPY train.py /app/\n")
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "job.yaml").write_text(SPEC)
    return tmp_path


def _plan(project: Path, prices: list[SpotPrice] | None = None, **settings: object):
    loaded = load(project / "job.yaml")
    lookup = PriceLookup(prices, "test prices" if prices else "unknown")
    return make_plan(loaded, Settings(bucket="bkt", **settings), lookup, now=NOW, token="abc123")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- sweep


def test_sweep_expands_to_every_combination_in_spec_order() -> None:
    spec = JobSpec.model_validate({
        "name": "s", "command": ["x"], "resources": {"instance_types": ["c5.large"]},
        "env": {"EPOCHS": 3}, "sweep": {"LR": [0.1, 0.01], "BATCH": [32, 64]},
    })
    runs = expand(spec, "s-20261126-070000-abc123")
    assert [r.run_id for r in runs] == [f"s-20261126-070000-abc123-{i}" for i in range(4)]
    assert [r.sweep for r in runs] == [
        {"LR": "0.1", "BATCH": "32"}, {"LR": "0.1", "BATCH": "64"},
        {"LR": "0.01", "BATCH": "32"}, {"LR": "0.01", "BATCH": "64"},
    ]
    assert all(r.env["EPOCHS"] == "3" for r in runs)
    assert runs[3].env == {"EPOCHS": "3", "LR": "0.01", "BATCH": "64"}


def test_no_sweep_is_one_run_whose_id_is_the_submission_id() -> None:
    spec = JobSpec.model_validate({"name": "s", "command": "python t.py",
                                   "resources": {"instance_types": ["c5.large"]}})
    (run,) = expand(spec, "s-1")
    assert run.run_id == "s-1" and run.index is None
    assert spec.command == ["/bin/sh", "-c", "python t.py"]


def test_submission_id_format() -> None:
    assert submission_id("exp1", NOW, "0a1b2c") == "exp1-20261126-070000-0a1b2c"
    with pytest.raises(ValueError):
        submission_id("exp1", NOW, "xyz")


# ---------------------------------------------------------------------------------------------- tags


def test_tag_is_stable_and_changes_with_any_sent_byte(project: Path) -> None:
    dockerfile = project / "Dockerfile.train"
    first = context.content_tag(dockerfile, project, {"A": "1"})
    assert context.content_tag(dockerfile, project, {"A": "1"}) == first
    (project / "train.py").write_text("print('hj')\n")  # one byte changed
    second = context.content_tag(dockerfile, project, {"A": "1"})
    assert second != first
    assert context.content_tag(dockerfile, project, {"A": "2"}) != second  # build args count
    (project / "new.txt").write_text("x")
    assert context.content_tag(dockerfile, project, {"A": "2"}) not in (first, second)


def test_tag_ignores_dockerignored_files(project: Path) -> None:
    (project / ".dockerignore").write_text("# comment\nresults/\n*.log\n")
    (project / "results").mkdir()
    (project / "results" / "metrics.json").write_text("{}")
    (project / "run.log").write_text("a")
    dockerfile = project / "Dockerfile.train"
    before = context.content_tag(dockerfile, project, {})
    (project / "results" / "metrics.json").write_text('{"changed": true}')
    (project / "run.log").write_text("b")
    assert context.content_tag(dockerfile, project, {}) == before
    assert "run.log" not in context.context_files(project, dockerfile)
    assert "train.py" in context.context_files(project, dockerfile)


def test_tag_changes_with_the_executable_bit(project: Path) -> None:
    dockerfile = project / "Dockerfile.train"
    before = context.content_tag(dockerfile, project, {})
    (project / "train.py").chmod(0o755)
    assert context.content_tag(dockerfile, project, {}) != before


# ---------------------------------------------------------------------------------------------- boot script


def _boot(**values: object) -> str:
    return artefact.user_data({"SUBMISSION": "s", "BUCKET": "b", "PREFIX": "p", "GROUP": "g", "DEADMAN_MINUTES": 1,
                               "RUNTIME_SHA256": SHA, **values})  # type: ignore[dict-item]


def test_boot_script_over_16_kb_is_refused() -> None:
    small = _boot(DEADMAN_MINUTES=75)
    assert len(small.encode()) < artefact.USER_DATA_LIMIT
    with pytest.raises(UsageError, match="at most 16384 bytes"):
        _boot(SUBMISSION="s" * 16384)
    exactly = "x" * artefact.USER_DATA_LIMIT
    artefact.check_size(exactly)
    with pytest.raises(UsageError):
        artefact.check_size(exactly + "y")


def test_boot_script_values_are_quoted_and_all_given() -> None:
    text = _boot(SUBMISSION="a b", PREFIX="p;rm -rf /")
    assert "PREFIX='p;rm -rf /'" in text
    with pytest.raises(ValueError, match="GROUP"):
        artefact.user_data({"SUBMISSION": "s", "BUCKET": "b", "PREFIX": "p", "DEADMAN_MINUTES": 1,
                            "RUNTIME_SHA256": SHA})


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is installed by .ci/run")
def test_rendered_boot_script_is_shellcheck_clean(project: Path, tmp_path: Path) -> None:
    script = tmp_path / "user-data.sh"
    script.write_text(pool_plan(_plan(project)).user_data)
    result = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# ---------------------------------------------------------------------------------------------- plan


def test_plan_json_has_the_documented_keys_and_secure_launch(project: Path) -> None:
    plan = backends.dry_run(_plan(project))
    for key in ("runs", "image", "launch", "user_data", "iam_policy", "estimate"):
        assert key in plan
    json.dumps(plan)
    assert len(plan["runs"]) == 6
    lt = plan["launch"]["launch_template"]
    assert lt["MetadataOptions"]["HttpTokens"] == "required"
    assert lt["MetadataOptions"]["HttpPutResponseHopLimit"] == 1  # the container never reaches IMDS
    assert lt["InstanceInitiatedShutdownBehavior"] == "terminate"
    ebs = lt["BlockDeviceMappings"][0]["Ebs"]
    assert ebs == {"VolumeSize": 30, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}
    assert plan["launch"]["security_group"]["IpPermissions"] == []
    assert plan["launch"]["auto_scaling_group"]["DesiredCapacity"] == 2
    assert plan["launch"]["auto_scaling_group"]["MixedInstancesPolicy"]["InstancesDistribution"][
        "OnDemandPercentageAboveBaseCapacity"] == 0
    assert plan["image"]["tag"].startswith("c-")
    assert plan["estimate"]["total_at_most"] == "unknown"
    assert lt["ImageId"].endswith("amazon-linux-2023/recommended/image_id")


def test_gpu_types_get_the_gpu_image(project: Path) -> None:
    (project / "job.yaml").write_text(SPEC.replace("[c5.large, m5.large]", "[g4dn.xlarge]"))
    assert "/gpu/" in pool_plan(_plan(project)).launch_template["ImageId"]


def test_placement_is_cheapest_first_within_max_price(project: Path) -> None:
    prices = [
        SpotPrice("c5.large", "us-east-1a", 0.040, NOW),
        SpotPrice("m5.large", "us-east-1b", 0.031, NOW),
        SpotPrice("c5.large", "us-east-1c", 0.090, NOW),  # over max_price 0.05
        SpotPrice("g4dn.xlarge", "us-east-1a", 0.010, NOW),  # not a candidate
    ]
    plan = _plan(project, prices)
    # c5.large in 1a costs 29 % more than the best pool: outside the 20 % margin (placement/rank.py), dropped.
    assert [(p.instance_type, p.availability_zone) for p in plan.placements] == [("m5.large", "us-east-1b")]
    assert [(p.instance_type, p.availability_zone) for p, _ in plan.dropped] == [("c5.large", "us-east-1a")]
    assert "over 20% above the best pool's" in plan.dropped[0][1]
    assert [p.availability_zone for p in plan.excluded] == ["us-east-1c"]
    assert plan.placements[0].on_demand == 0.096 and plan.placements[0].savings == pytest.approx(0.677, abs=1e-3)
    estimate = plan.estimate
    assert estimate["spot_price_per_hour"] == 0.031
    ebs = 30 * 0.08 / 730
    assert estimate["per_run_at_most"] == pytest.approx(1 * (0.031 + ebs), abs=1e-4)
    assert estimate["total_at_most"] == pytest.approx(6 * (0.031 + ebs), abs=1e-3)


def test_no_offer_under_max_price_is_a_clear_error(project: Path) -> None:
    with pytest.raises(CapacityError) as info:
        _plan(project, [SpotPrice("c5.large", "us-east-1a", 0.2, NOW)])
    assert "no spot offer for c5.large, m5.large in us-east-1 at or under max_price $0.05/h" in info.value.what
    assert "cheapest offer is c5.large in us-east-1a at $0.2000/h" in info.value.what
    assert "raise resources.max_price" in (info.value.next_step or "")


def test_instance_policy_is_scoped_to_this_submission(project: Path) -> None:
    plan = _plan(project)
    policy = pool_plan(plan).iam_policy
    statements = {s["Sid"]: s for s in policy["Statement"]}
    sub = plan.submission_id
    assert statements["OwnObjectsRead"]["Resource"] == [  # tests/unit/test_policy_scope.py: the S3 scope in full
        f"arn:aws:s3:::bkt/submitter/submissions/{sub}/*", f"arn:aws:s3:::bkt/submitter/runs/{sub}-?/*"]
    assert statements["OwnQueue"]["Resource"] == [f"arn:aws:sqs:us-east-1:${{aws:PrincipalAccount}}:submitter-{sub}"]
    assert statements["PullTrainingImage"]["Resource"][0].endswith(":repository/submitter")
    assert statements["LeaveOwnGroup"]["Resource"][0].endswith(f"autoScalingGroupName/submitter-{sub}")
    wildcard = [s["Sid"] for s in policy["Statement"] if "*" in s["Resource"]]
    assert wildcard == ["EcrLogin", "ReadSpotPrice"]  # actions with no resource-level scoping
    no_writes_elsewhere = [a for s in policy["Statement"] for a in s["Action"] if s["Effect"] == "Allow"
                           and a.startswith(("iam:", "ec2:Run", "ec2:Terminate", "s3:Delete"))
                           and s["Sid"] != "OwnPrunes"]
    assert no_writes_elsewhere == []
    # The only deletes: old checkpoint generations of its own runs (runtime/checkpoints.py prunes them), a run's
    # own older ledger entry, as an attempt renews it (runtime/ledger.py), and its superseded run index entries.
    assert statements["OwnPrunes"]["Action"] == ["s3:DeleteObject"]
    assert statements["OwnPrunes"]["Resource"] == [
        f"arn:aws:s3:::bkt/submitter/runs/{sub}-?/checkpoints/*",
        f"arn:aws:s3:::bkt/submitter/ledger/*/{sub}-?/attempt-*",
        f"arn:aws:s3:::bkt/submitter/submissions/{sub}/index/*"]
    # What submit wrote in a run's folder (the run record, a cancel marker): an explicit deny, which wins
    assert statements["NeverWhatSubmitWrote"]["Effect"] == "Deny"
    assert statements["NeverWhatSubmitWrote"]["Resource"] == [
        "arn:aws:s3:::bkt/submitter/runs/*/spec.json", "arn:aws:s3:::bkt/submitter/runs/*/cancel"]


def test_names_are_deterministic_and_fit_aws_limits() -> None:
    long_id = "a" * 40 + "-20261126-070000-abc123"
    names = Names.of(long_id)
    assert names == Names.of(long_id)
    assert len(names.role) <= 64 and len(names.queue) <= 80 and len(names.dead_letter_queue) <= 80
    assert names.role != Names.of("b" * 40 + "-20261126-070000-abc123").role


# ---------------------------------------------------------------------------------------------- settings


def test_settings_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SUBMITTER_BUCKET=from-dotenv\nSUBMITTER_PREFIX=/p/\nSUBMITTER_SANDBOX=1\n")
    loaded = settings_mod.load({"SUBMITTER_BUCKET": "from-env"}, tmp_path)
    assert loaded.bucket == "from-env" and loaded.prefix == "p" and loaded.sandbox is True
    assert settings_mod.load({"AWS_REGION": "eu-west-1"}, tmp_path).region == "eu-west-1"


def test_bad_settings_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SUBMITTER_BUCKET"):
        settings_mod.load({"SUBMITTER_BUCKET": "Bad_Bucket"}, tmp_path)
    with pytest.raises(SettingsError, match="SUBMITTER_SANDBOX"):
        settings_mod.load({"SUBMITTER_SANDBOX": "maybe"}, tmp_path)


def test_secret_values_come_from_the_environment_or_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TOKEN_A=dotenv\n")
    assert settings_mod.secret_values(["TOKEN_A"], {}, tmp_path) == {"TOKEN_A": "dotenv"}
    with pytest.raises(SettingsError, match="no value for MISSING"):
        settings_mod.secret_values(["MISSING"], {}, tmp_path)
