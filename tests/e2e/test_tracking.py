"""Issue 6 end to end in the sandbox: a second machine sees the same status and results, cancel mid-run, and gc.

Real CLI processes, the real boot script and agent on simulated hosts, the real engine; all state read back
from the sandbox's AWS API (S3 objects and tags), never from a local file.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600


def _spec(project: Path, body: str) -> Path:
    name = "e2e-" + uuid.uuid4().hex[:8]
    path = project / "jobs" / f"{name}.yaml"
    path.write_text(f"name: {name}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n" + textwrap.dedent(body))
    return path


def _run(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def _second_machine(sandbox_env: dict[str, str], home: Path) -> dict[str, str]:
    """What another machine has: credentials, region, the API endpoint and the bucket name. Nothing else."""
    keep = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "SUBMITTER_BUCKET")
    env = {name: sandbox_env[name] for name in keep}
    env.update({"PATH": os.environ["PATH"], "HOME": str(home), "SUBMITTER_HOME": str(home / ".submitter")})
    if os.environ.get("PYTHONPATH"):  # where the code under test is, when it is not installed (a worktree)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _live(clients: Any, submission: str) -> list[str]:
    pages = clients("ec2").describe_instances(Filters=[
        {"Name": "tag:submitter:submission", "Values": [submission]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "shutting-down"]}])
    return [i["InstanceId"] for r in pages["Reservations"] for i in r["Instances"]]


def test_a_second_machine_sees_the_same_status_and_downloads_the_same_results(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path, tmp_path: Path
) -> None:
    """The "second machine" is a CLI process with an empty HOME and SUBMITTER_HOME, given only what a user
    would configure on another laptop: AWS credentials, region, endpoint and SUBMITTER_BUCKET. It runs
    without --sandbox on purpose: sandbox mode reads the sandbox's connection from the first machine's
    SUBMITTER_HOME/sandbox/state.json, a local file; pointed at the same API through the standard
    AWS_ENDPOINT_URL instead, it is exactly a machine that talks to "AWS" with the same settings. Its homes
    start empty and keep only a cache: nothing local was needed (the downloads go to --dest)."""
    spec = _spec(project, """\
        command: [python, train.py]
        env: {EPOCHS: "2", SAMPLES: "300"}
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
        sweep: {LR: [0.1, 0.05]}
        queue: {max_workers: 2}
    """)
    first = _run(sandbox_env, "--sandbox", "submit", str(spec), "--wait", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    submission = json.loads(first.stdout)["submissions"][0]["submission_id"]

    here = _run(sandbox_env, "--sandbox", "status", submission, "--json")
    home = tmp_path / "second"
    home.mkdir()
    there_env = _second_machine(sandbox_env, home)
    there = _run(there_env, "status", submission, "--json", cwd=home)
    assert here.returncode == 0 and there.returncode == 0, here.stderr + there.stderr
    mine, theirs = json.loads(here.stdout)["runs"], json.loads(there.stdout)["runs"]
    assert theirs == mine and [r["state"] for r in theirs] == ["succeeded", "succeeded"]
    # The agents kept the run index under the instance role (IAM enforced): each put its entries (queued by
    # submit, then starting and the end by the agent: 6 in all) and deleted the one it superseded. A delete may
    # miss when `--wait` removes the role right after the last final status (harmless: the reader takes the
    # highest), so: every run's latest entry is its end, and fewer than the 6 written are left.
    from submitter import contract
    from submitter.runtime import index

    layout = contract.Layout("submitter")
    pages = sandbox_clients("s3").get_paginator("list_objects_v2").paginate(
        Bucket=sandbox["bucket"], Prefix=layout.index(submission))
    entries = [o["Key"] for page in pages for o in page.get("Contents", [])]
    latest = index.latest(entries, layout, submission)
    assert sorted(latest) == sorted(r["run_id"] for r in theirs) and len(entries) < 6, entries
    assert all(row["state"] == contract.SUCCEEDED and row["exit_code"] == 0 and row["attempt"] == 1 and not tied
               for row, tied in latest.values()), latest
    table = _run({**there_env, "COLUMNS": "250"}, "status", submission, cwd=home)
    assert all(r["run_id"] in table.stdout for r in theirs)

    got_here = _run(sandbox_env, "--sandbox", "results", submission, "--dest", str(tmp_path / "here"))
    got_there = _run(there_env, "results", submission, "--dest", str(tmp_path / "there"), cwd=home)
    assert got_here.returncode == 0 and got_there.returncode == 0, got_here.stderr + got_there.stderr
    for run in theirs:
        a, b = tmp_path / "here" / run["run_id"], tmp_path / "there" / run["run_id"]
        names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
        assert "metrics.json" in names
        assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
        assert all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
    again = _run(there_env, "results", submission, "--dest", str(tmp_path / "there"), cwd=home)
    assert "fetched 0 file(s)" in again.stderr, again.stderr  # identical files are skipped
    # It needed nothing locally (its home started empty) and kept only a cache: which account its access key
    # belongs to (SUBMITTER_HOME holds caches, never the source of truth).
    kept = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    assert kept == [".submitter/accounts.json"], kept


def test_cancel_mid_run_stops_the_container_uploads_outputs_and_leaves_no_instance(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path
) -> None:
    spec = _spec(project, """\
        command: [python, train.py]
        env: {EPOCHS: "60", SAMPLES: "300", EPOCH_SECONDS: "3"}
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
        checkpoints: /checkpoints
        limits: {max_runtime: 20m}
    """)
    submitted = _run(sandbox_env, "--sandbox", "submit", str(spec), "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (sub,) = json.loads(submitted.stdout)
    submission, (run_id,) = sub["submission_id"], sub["runs"]
    s3, bucket = sandbox_clients("s3"), sandbox["bucket"]

    def chunks() -> list[str]:
        out = s3.list_objects_v2(Bucket=bucket, Prefix=f"submitter/runs/{run_id}/logs/chunks/")
        return [o["Key"] for o in out.get("Contents", [])]

    sandbox.wait_for(chunks, 300, "the run's first streamed log chunk")
    follow = subprocess.Popen([sys.executable, "-m", "submitter", "--sandbox", "logs", run_id, "--follow"],
                              cwd=REPO, env=sandbox_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # a few epochs while following
    result = _run(sandbox_env, "--sandbox", "cancel", submission, "--yes", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    (run,) = out["runs"]
    assert run["state"] == "cancelled" and run["reason"] == "cancelled", run
    assert out["forced"] == []
    metrics = json.loads(s3.get_object(Bucket=bucket, Key=f"submitter/runs/{run_id}/outputs/metrics.json")
                         ["Body"].read())
    assert metrics["status"] == "interrupted" and metrics["history"], "outputs so far were uploaded"
    assert _live(sandbox_clients, submission) == [], "no instance alive"
    name = f"submitter-{submission}"
    assert sandbox_clients("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"] == []
    assert sandbox_clients("sqs").list_queues(QueueNamePrefix=name).get("QueueUrls", []) == []

    followed, err = follow.communicate(timeout=120)
    assert follow.returncode == 0, err
    assert "epoch 1/60" in followed and f"{run_id}: cancelled" in err  # --follow streamed it live, to the end


def test_gc_removes_an_orphaned_instance_and_volume_and_touches_nothing_untagged(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any
) -> None:
    ec2 = sandbox_clients("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    gone = f"gone-20200101-000000-{uuid.uuid4().hex[:6]}"
    orphan_tags = [{"Key": "submitter:submission", "Value": gone},
                   {"Key": "submitter:deadline", "Value": "2020-01-01T00:45:00Z"},
                   {"Key": "submitter:bucket", "Value": sandbox["bucket"]},
                   {"Key": "submitter:prefix", "Value": "submitter"}]
    # gc judges a submission only from its documents in this bucket and prefix: this one ended long ago.
    s3 = sandbox_clients("s3")
    s3.put_object(Bucket=sandbox["bucket"], Key=f"submitter/submissions/{gone}/queued",
                  Body=json.dumps({"runs": [gone]}).encode())
    s3.put_object(Bucket=sandbox["bucket"], Key=f"submitter/runs/{gone}/status.json",
                  Body=json.dumps({"run_id": gone, "state": "failed"}).encode())
    teammates = [t if t["Key"] != "submitter:bucket" else {**t, "Value": "a-teammates-bucket"} for t in orphan_tags]

    def launch(tags: list[dict[str, str]]) -> str:
        spec = [{"ResourceType": "instance", "Tags": tags}] if tags else []
        return str(ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.medium",
                                     TagSpecifications=spec)["Instances"][0]["InstanceId"])

    def volume(tags: list[dict[str, str]]) -> str:
        spec = [{"ResourceType": "volume", "Tags": tags}] if tags else []
        return str(ec2.create_volume(AvailabilityZone=f"{sandbox['region']}a", Size=1,
                                     TagSpecifications=spec)["VolumeId"])

    orphan, orphan_volume = launch(orphan_tags), volume(orphan_tags)
    untagged, untagged_volume = launch([]), volume([])
    teammate = launch(teammates)  # the same account, another bucket: not gc's to judge
    try:
        listed = _run(sandbox_env, "--sandbox", "gc")  # no terminal, no --yes: lists, then refuses
        assert listed.returncode == 2 and orphan in listed.stdout and orphan_volume in listed.stdout
        assert untagged not in listed.stdout and untagged_volume not in listed.stdout and teammate not in listed.stdout
        assert sandbox.instance_state(orphan) == "running"

        result = _run(sandbox_env, "--sandbox", "gc", "--yes", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        removed = {o["id"] for o in json.loads(result.stdout)["removed"]}
        assert {orphan, orphan_volume} <= removed and not {untagged, untagged_volume} & removed
        sandbox.wait_state(orphan, "terminated")
        assert sandbox.instance_state(untagged) == "running" and sandbox.instance_state(teammate) == "running"
        volumes = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
        assert orphan_volume not in volumes and untagged_volume in volumes
    finally:
        ec2.terminate_instances(InstanceIds=[untagged, teammate])
        ec2.delete_volume(VolumeId=untagged_volume)
