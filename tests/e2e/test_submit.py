"""Issue 5 end to end in the sandbox: the real CLI, the real image build and push, the real boot script and
agent on simulated hosts, real loop-device volumes; every result read back from S3."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from submitter import contract
from submitter.runtime import artefact

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600


def _spec(project: Path, body: str) -> tuple[Path, str]:
    name = "e2e-" + uuid.uuid4().hex[:8]
    path = project / "jobs" / f"{name}.yaml"
    path.write_text(f"name: {name}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n" + textwrap.dedent(body))
    return path, name


def _cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def _statuses(env: dict[str, str], target: str) -> list[dict[str, Any]]:
    result = _cli(env, "status", target, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["runs"]


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _assert_nothing_left(clients: Any, submission: str) -> None:
    ec2 = clients("ec2")
    live = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:submitter:submission", "Values": [submission]}])[
        "Reservations"] for i in r["Instances"] if i["State"]["Name"] not in ("terminated",)]
    assert live == [], f"instances still alive: {[(i['InstanceId'], i['State']['Name']) for i in live]}"
    name = f"submitter-{submission}"
    assert clients("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"] == []
    queues = clients("sqs").list_queues(QueueNamePrefix=name).get("QueueUrls", [])
    assert queues == []


def test_a_sweep_runs_on_one_worker_in_turn_and_leaves_results_and_nothing_billing(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path
) -> None:
    spec, name = _spec(project, """\
        command: [python, train.py]
        env: {EPOCHS: "2", SAMPLES: "300"}
        resources: {instance_types: [c5.large, m5.large], max_price: 0.1, volume_gb: 1}
        checkpoints: /checkpoints
        limits: {max_runtime: 10m}
        sweep: {LR: [0.1, 0.05]}
        queue: {max_workers: 1}
    """)
    result = _cli(sandbox_env, "submit", str(spec), "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    (submission,) = out["submissions"]
    runs = out["runs"]
    assert [r["state"] for r in runs] == ["succeeded", "succeeded"], runs
    assert len({r["instance_id"] for r in runs}) == 1, "max_workers 1: one instance runs both runs in turn"
    assert all(r["exit_code"] == 0 and r["instance_type"] in ("c5.large", "m5.large") for r in runs)

    s3 = sandbox_clients("s3")
    bucket = sandbox["bucket"]
    for run in runs:
        keys = _keys(s3, bucket, f"submitter/runs/{run['run_id']}/")
        assert any(k.endswith("/outputs/metrics.json") for k in keys), keys
        assert any(k.endswith("/logs/container.log") for k in keys), keys
        assert any(k.endswith("/status.json") for k in keys) and any(k.endswith("/spec.json") for k in keys)
        spec_key = f"submitter/runs/{run['run_id']}/spec.json"
        spec_json = json.loads(s3.get_object(Bucket=bucket, Key=spec_key)["Body"].read())
        assert "@sha256:" in spec_json["image"], "runs record the pushed digest"
        log = s3.get_object(Bucket=bucket, Key=f"submitter/runs/{run['run_id']}/logs/container.log")["Body"].read()
        assert b"epoch 2/2" in log
    # The image was pulled once by the one worker, though it ran two runs.
    boot_log = _cli(sandbox_env, "sandbox", "logs", runs[0]["instance_id"]).stdout
    assert boot_log.count("pulled ") == 1, boot_log[-3000:]
    # The runtime staged is the artefact these tests ran, and the host ran it only after checking its hash.
    layout = contract.Layout("submitter")
    staged = s3.get_object(Bucket=bucket, Key=layout.runtime(submission["submission_id"]))["Body"].read()
    assert hashlib.sha256(staged).hexdigest() == artefact.sha256()
    assert f"runtime {artefact.sha256()} verified" in boot_log
    _assert_nothing_left(sandbox_clients, submission["submission_id"])

    # results from the job name, as a user would download them
    dest = project / "got"
    got = _cli(sandbox_env, "results", name, "--dest", str(dest))
    assert got.returncode == 0, got.stderr
    metrics = json.loads((dest / runs[0]["run_id"] / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.4  # 3 classes: chance is 1/3


def test_two_workers_take_the_runs_in_parallel(sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any,
                                               project: Path) -> None:
    spec, _ = _spec(project, """\
        command: [python, train.py]
        env: {EPOCHS: "2", SAMPLES: "300", EPOCH_SECONDS: "4"}
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
        sweep: {LR: [0.1, 0.05]}
        queue: {max_workers: 2}
    """)
    result = _cli(sandbox_env, "submit", str(spec), "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    runs = out["runs"]
    assert [r["state"] for r in runs] == ["succeeded", "succeeded"]
    assert len({r["instance_id"] for r in runs}) == 2, "max_workers 2: two instances"
    _assert_nothing_left(sandbox_clients, out["submissions"][0]["submission_id"])


def test_a_failing_command_fails_the_run_keeps_its_outputs_and_wait_exits_1(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path
) -> None:
    spec, _ = _spec(project, """\
        command: [python, train.py]
        env: {EPOCHS: "3", SAMPLES: "300", FAIL_WITH: "3"}
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
    """)
    result = _cli(sandbox_env, "submit", str(spec), "--wait", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    assert run["state"] == "failed" and run["exit_code"] == 3, run
    keys = _keys(sandbox_clients("s3"), sandbox["bucket"], f"submitter/runs/{run['run_id']}/")
    assert any(k.endswith("/outputs/metrics.json") for k in keys), "partial outputs are uploaded"
    assert any(k.endswith("/logs/container.log") for k in keys)
    _assert_nothing_left(sandbox_clients, json.loads(result.stdout)["submissions"][0]["submission_id"])


def test_max_runtime_stops_the_container_and_uploads_outputs(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path
) -> None:
    spec, _ = _spec(project, """\
        command: [python, train.py]
        env: {EPOCHS: "50", SAMPLES: "300", EPOCH_SECONDS: "5"}
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
        checkpoints: /checkpoints
        limits: {max_runtime: 1m}
    """)
    result = _cli(sandbox_env, "submit", str(spec), "--wait", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    assert run["state"] == "failed" and "max_runtime" in run["reason"], run
    keys = _keys(sandbox_clients("s3"), sandbox["bucket"], f"submitter/runs/{run['run_id']}/")
    assert any(k.endswith("/outputs/metrics.json") for k in keys), "the stopped run's outputs are uploaded"
    assert any("/checkpoints/" in k for k in keys)
    _assert_nothing_left(sandbox_clients, json.loads(result.stdout)["submissions"][0]["submission_id"])


def _launch_by_hand(sandbox: Any, project: Path, image: str | None = None,
                    device: str | None = None) -> tuple[dict[str, Any], str]:
    """Stage and launch one run through the real pool backend, with a broken image reference or
    data volume device that a spec cannot express; wait for the run to end. Returns (status, submission)."""
    import dataclasses

    from submitter import connect, execute
    from submitter.backends.pool import pool_plan, submit
    from submitter.progress import NullProgress
    from submitter.spec import load

    spec, _ = _spec(project, """\
        command: [python, train.py]
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
    """)
    settings = connect.resolve(sandbox.settings)
    aws = connect.aws(settings)
    loaded = load(spec)
    plan = execute.make_plan(loaded, settings, execute.prices(aws, loaded), account=execute.account_id(aws))
    pool = pool_plan(plan)
    if device:
        template = json.loads(json.dumps(pool.launch_template))
        template["BlockDeviceMappings"][0]["DeviceName"] = device
        pool = dataclasses.replace(pool, launch_template=template)
    image = image or f"{settings.registry}/submitter@sha256:{'0' * 64}"
    submit.submit(aws, plan, pool, image, {}, NullProgress())
    (run,) = execute.wait(aws, settings, [execute.Submitted(plan, image)], False, lambda _: None, poll_s=2)
    return run, plan.submission_id


def test_an_image_pull_refused_at_boot_fails_the_run_with_the_reason(
    sandbox: Any, sandbox_clients: Any, project: Path
) -> None:
    """The registry refuses the pull on the instance: a digest that does not exist."""
    run, submission = _launch_by_hand(sandbox, project)
    assert run["state"] == "failed", run
    assert "image pull" in run["reason"], run
    _assert_nothing_left(sandbox_clients, submission)


def test_a_volume_that_never_appears_fails_the_run_with_the_reason(
    sandbox: Any, sandbox_clients: Any, project: Path
) -> None:
    """The launch maps the data volume at another device, so /dev/sdf never appears on the host."""
    run, submission = _launch_by_hand(sandbox, project, image=os.environ.get("SUBMITTER_E2E_IMAGE"),
                                      device="/dev/sdk")
    assert run["state"] == "failed", run
    assert "/dev/sdf" in run["reason"], run
    _assert_nothing_left(sandbox_clients, submission)
