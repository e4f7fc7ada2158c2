"""The instance runtime's pool agent end to end in the sandbox, without the submit pipeline: a submission
staged by hand (submission.json, runtime.pyz, queue messages, an image pushed to the sandbox registry), the
real boot script as user-data, a real /dev/sdf volume; every result read back from S3."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from submitter import contract
from submitter.runtime import artefact
from submitter.sandbox import api
from submitter.sandbox import state as sandbox_state

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
AMI = "ami-12c6146b"  # any image id moto knows; the simulated host ignores it
FAST = {"EPOCHS": "2", "SAMPLES": "300"}


@pytest.fixture(scope="module")
def image(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example training image, pushed to the sandbox registry; its by-digest reference."""
    context = tmp_path_factory.mktemp("agent-image")
    shutil.copy(REPO / "train.py", context / "train.py")
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim\nENV PYTHONUNBUFFERED=1\n"
        'RUN command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python\n'
        "WORKDIR /app\nCOPY train.py /app/\nCMD [\"python\", \"train.py\"]\n")
    registry = sandbox.state["registry"]
    token = sandbox.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, password = base64.b64decode(token).decode().split(":", 1)
    tag = f"{registry}/e2e-agent-{uuid.uuid4().hex[:8]}:train"
    subprocess.run(["docker", "login", "--username", user, "--password-stdin", registry], input=password,
                   text=True, check=True, capture_output=True)
    subprocess.run(["docker", "build", "--quiet", "--tag", tag, str(context)], check=True, capture_output=True)
    subprocess.run(["docker", "push", tag], check=True, capture_output=True)
    # The digest reference of this push: the same image pushed by an earlier run elsewhere has other RepoDigests.
    digests = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .RepoDigests}}", tag],
                                        check=True, capture_output=True, text=True).stdout)
    digest = next(d for d in digests if d.startswith(tag.rsplit(":", 1)[0] + "@"))
    try:
        yield digest
    finally:
        subprocess.run(["docker", "rmi", "--force", tag, digest], capture_output=True)


class Staged:
    """One submission staged by hand, as submit would leave it."""

    def __init__(self, sandbox: Any, image: str, runs: list[dict[str, str]], **overrides: Any) -> None:
        self.sandbox = sandbox
        self.s3, self.sqs, self.ec2 = sandbox.client("s3"), sandbox.client("sqs"), sandbox.client("ec2")
        self.bucket = sandbox.state["bucket"]
        suffix = uuid.uuid4().hex[:8]
        self.prefix = f"e2e-agent-{suffix}"
        self.submission = f"agent-e2e-20260101-000000-{suffix[:6]}"  # the shape of a real id (contract)
        self.layout = contract.Layout(self.prefix)
        self.queue_url = self.sqs.create_queue(QueueName=f"submitter-{self.submission}")["QueueUrl"]
        inputs = self.layout.uri(self.bucket, self.layout.input(suffix))
        self.put(self.layout.input(suffix) + "readme.txt", b"staged input\n")
        self.doc = {
            "version": 1, "submission_id": self.submission, "job": "agent-e2e",
            "region": sandbox.state["region"], "queue_name": f"submitter-{self.submission}", "image": image,
            "registry": sandbox.state["registry"], "command": ["python", "train.py"],
            "volume_mount": "/data", "outputs": "/outputs", "checkpoints": "/checkpoints", "gpus": "auto",
            "max_runtime": 600, "max_cost": None, "retries": {"on_interruption": 2, "on_failure": 0},
            "inputs": [{"uri": inputs, "target": "/data/staged", "kind": "dir"}],
            "secrets": {"names": [], "ssm_prefix": contract.secrets_prefix(self.submission)},
            "grace_seconds": 30, "deadman_minutes": 30, **overrides,
        }
        self.put(self.layout.submission_doc(self.submission), json.dumps(self.doc).encode())
        self.put(self.layout.runtime(self.submission), artefact.build())
        self.run_ids = [f"{self.submission}-{i}" for i in range(len(runs))]
        for index, (run_id, env) in enumerate(zip(self.run_ids, runs, strict=True)):
            self.put(self.layout.status(run_id), json.dumps({
                "run_id": run_id, "submission_id": self.submission, "job": "agent-e2e", "state": "queued",
                "attempt": 1, "interruptions": 0, "failures": 0, "created_at": "2026-11-26T07:00:00Z"}).encode())
            self.sqs.send_message(QueueUrl=self.queue_url,
                                  MessageBody=json.dumps(contract.run_message(run_id, index, env)))

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def text(self, key: str) -> str | None:
        try:
            return str(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode())
        except self.s3.exceptions.NoSuchKey:
            return None

    def status(self, run_id: str) -> dict[str, Any]:
        return dict(json.loads(self.text(self.layout.status(run_id)) or "{}"))

    def keys(self, under: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=under)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def launch(self, first: str = "") -> str:
        """One instance booting the real boot script; `first`, a line to run before it (a test's host change)."""
        user_data = artefact.user_data({
            "SUBMISSION": self.submission, "BUCKET": self.bucket, "PREFIX": self.prefix,
            "GROUP": f"submitter-{self.submission}", "DEADMAN_MINUTES": 30, "RUNTIME_SHA256": artefact.sha256()})
        if first:
            shebang, rest = user_data.split("\n", 1)
            user_data = f"{shebang}\n{first}\n{rest}"
        out = self.ec2.run_instances(
            ImageId=AMI, InstanceType="c5.large", MinCount=1, MaxCount=1, UserData=user_data,
            IamInstanceProfile={"Name": self.sandbox.instance_profile(self.role_policy())},
            InstanceInitiatedShutdownBehavior="terminate",
            BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "VolumeType": "gp3"}}],
        )
        instance_id = str(out["Instances"][0]["InstanceId"])
        self.sandbox.wait_host(instance_id, timeout=120)  # fail fast, and clearly, if no host starts
        return instance_id

    def role_policy(self) -> dict[str, Any]:
        """What a worker of this hand-staged submission does, action by action (the sandbox enforces IAM; the
        plan's own scoped policy is tested by test_submit.py and tests/unit/test_policy_scope.py)."""
        region, bucket = self.sandbox.state["region"], self.bucket
        return {"Version": "2012-10-17", "Statement": [
            # DeleteObject: a worker prunes its runs' old checkpoint generations and renews its ledger and run
            # index entries (the plan's own policy scopes each of them: tests/unit/test_plan.py)
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                                           "s3:DeleteObject"],
             "Resource": [f"arn:aws:s3:::{bucket}/{self.prefix}/*"]},
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"]},
            {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                                           "sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
             "Resource": [f"arn:aws:sqs:{region}:*:submitter-{self.submission}"]},
            {"Effect": "Allow", "Action": ["ssm:GetParameters"],
             "Resource": [f"arn:aws:ssm:{region}:*:parameter{contract.secrets_prefix(self.submission)}*"]},
            {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "ec2:DescribeSpotPriceHistory",
                                           "autoscaling:TerminateInstanceInAutoScalingGroup"], "Resource": ["*"]},
        ]}

    def visible_messages(self) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _boot_log(sandbox: Any, instance_id: str) -> str:
    try:
        return str(api.logs(sandbox.settings, instance_id))
    except Exception as exc:  # only for the failure message
        return f"(no boot log: {exc})"


def test_one_instance_works_through_the_queue_and_terminates(sandbox: Any, image: str) -> None:
    secret = "e2e-" + uuid.uuid4().hex
    staged = Staged(sandbox, image, [dict(FAST), {**FAST, "FAIL_WITH": "3"}],
                    command=["/bin/sh", "-c", 'echo "token length ${#E2E_TOKEN}"; exec python train.py'])
    staged.doc["secrets"]["names"] = ["E2E_TOKEN"]
    staged.put(staged.layout.submission_doc(staged.submission), json.dumps(staged.doc).encode())
    sandbox.client("ssm").put_parameter(Name=f"/submitter/{staged.submission}/E2E_TOKEN", Value=secret,
                                        Type="SecureString")
    iid = staged.launch()
    try:
        sandbox.wait_state(iid, "terminated", timeout=420)
    finally:
        print(_boot_log(sandbox, iid))
    ok, bad = (staged.status(r) for r in staged.run_ids)
    assert ok["state"] == "succeeded" and ok["exit_code"] == 0 and ok["instance_id"] == iid, ok
    assert ok["attempt"] == 1 and ok["instance_type"] == "c5.large" and ok["started_at"] <= ok["ended_at"]
    assert bad["state"] == "failed" and bad["exit_code"] == 3 and bad["reason"] == "exit code 3", bad
    for run_id in staged.run_ids:
        keys = staged.keys(staged.layout.run(run_id))
        for expected in ("outputs/metrics.json", "outputs/model.json", "checkpoints/manifests/000001.json",
                         "logs/container.log", "logs/agent.log", "logs/chunks/000000.log"):
            assert staged.layout.run(run_id) + expected in keys, (expected, keys)
    metrics = json.loads(staged.text(staged.layout.outputs(staged.run_ids[0]) + "metrics.json") or "{}")
    assert metrics["status"] == "completed", metrics
    container_log = staged.text(staged.layout.container_log(staged.run_ids[0])) or ""
    chunks = "".join(staged.text(k) or "" for k in sorted(staged.keys(staged.layout.chunks(staged.run_ids[0]))))
    assert container_log and chunks == container_log
    assert f"token length {len(secret)}" in container_log  # the secret reached the container...
    for run_id in staged.run_ids:  # ...and no log holds it
        assert secret not in (staged.text(staged.layout.agent_log(run_id)) or "")
    assert secret not in _boot_log(sandbox, iid)
    report = json.loads(staged.text(staged.layout.instance_report(staged.submission, iid)) or "{}")
    assert report["state"] == "drained" and [r["state"] for r in report["runs"]] == ["succeeded", "failed"]
    assert staged.visible_messages() == 0
    assert "agent exited with 0" in _boot_log(sandbox, iid)


def test_a_spot_notice_requeues_the_run_and_the_next_instance_resumes_it(sandbox: Any, image: str) -> None:
    staged = Staged(sandbox, image, [{"EPOCHS": "12", "SAMPLES": "300", "EPOCH_SECONDS": "3"}])
    run_id = staged.run_ids[0]
    first = staged.launch()
    try:
        sandbox.wait_for(lambda: staged.status(run_id).get("state") == "running", 240, "the run to start")
        # What runs on the host is byte for byte the artefact staged, which is the one these tests ran.
        host_copy = f"/opt/submitter/{contract.RUNTIME_ARTEFACT}"
        on_host = subprocess.run(["docker", "exec", sandbox_state.CONTAINER_PREFIX + first, "cat", host_copy],
                                 capture_output=True, check=True).stdout
        staged_copy = staged.s3.get_object(Bucket=staged.bucket, Key=staged.layout.runtime(staged.submission))["Body"]
        assert on_host == staged_copy.read() == artefact.build()
        assert hashlib.sha256(on_host).hexdigest() == artefact.sha256()
        time.sleep(12)  # a few epochs, each checkpointed on the instance (the periodic sync is 60 s apart)
        api.interrupt(sandbox.settings, first, 40)
        sandbox.wait_for(lambda: staged.status(run_id).get("state") == "interrupted", 90,
                         "the run to be interrupted")
        interrupted = staged.status(run_id)
        assert interrupted["interruptions"] == 1 and interrupted["exit_code"] == 143, interrupted
        assert any(k.endswith("checkpoint.json") for k in staged.keys(staged.layout.checkpoints(run_id)))
        sandbox.wait_state(first, "terminated", timeout=120)
    finally:
        print(_boot_log(sandbox, first))
    assert staged.visible_messages() == 1  # put back at once, not after the visibility timeout

    second = staged.launch()
    try:
        sandbox.wait_state(second, "terminated", timeout=420)
    finally:
        print(_boot_log(sandbox, second))
    done = staged.status(run_id)
    assert done["state"] == "succeeded" and done["attempt"] == 2 and done["interruptions"] == 1, done
    assert done["instance_id"] == second
    metrics = json.loads(staged.text(staged.layout.outputs(run_id) + "metrics.json") or "{}")
    assert metrics["status"] == "completed", metrics
    agent_log = staged.text(staged.layout.agent_log(run_id)) or ""
    assert "spot interruption notice" in agent_log, agent_log
    # the resume restored the manifest the interrupted attempt's final sync wrote, verified (runtime/checkpoints.py)
    assert re.search(r"checkpoints restored from manifest \d+ \(attempt 1, .*\): 1 file\(s\), verified", agent_log), \
        agent_log
    report = json.loads(staged.text(staged.layout.instance_report(staged.submission, first)) or "{}")
    assert report["state"] == "interrupted", report


def test_a_refused_image_pull_fails_every_run_with_the_reason(sandbox: Any, image: str) -> None:
    missing = image.split("@", 1)[0] + "@sha256:" + "0" * 64
    staged = Staged(sandbox, missing, [dict(FAST), dict(FAST)])
    iid = staged.launch()
    try:
        sandbox.wait_state(iid, "terminated", timeout=300)
    finally:
        print(_boot_log(sandbox, iid))
    for run_id in staged.run_ids:
        status = staged.status(run_id)
        assert status["state"] == "failed" and status["reason"].startswith("image pull refused: "), status
        assert "manifest unknown" in status["reason"] and status["instance_id"] == iid
    report = json.loads(staged.text(staged.layout.instance_report(staged.submission, iid)) or "{}")
    assert report["state"] == "boot-failed" and report["reason"].startswith("image pull refused: ")
    assert staged.visible_messages() == 0
    assert "agent exited with 1" in _boot_log(sandbox, iid)


def test_a_host_that_cannot_install_the_aws_cli_reports_a_boot_failure_and_terminates(
        sandbox: Any, image: str) -> None:
    """The host image has no AWS CLI, as the AMI has none; here its repository is unreachable too. This is how
    the test simulates that: the dnf stand-in's local repository is removed before the boot script runs, so
    `dnf install awscli-2` fails as it does when an instance cannot reach Amazon Linux's repository."""
    staged = Staged(sandbox, image, [dict(FAST)])
    iid = staged.launch(first="rm -rf /var/cache/submitter-dnf")
    try:
        sandbox.wait_state(iid, "terminated", timeout=240)
    finally:
        print(_boot_log(sandbox, iid))
    reason = ("cannot install the AWS CLI: Error: Failed to download metadata for repo 'amazonlinux': "
              "Cannot download repomd.xml: Cannot download repodata/repomd.xml: All mirrors were tried")
    boot_log = _boot_log(sandbox, iid)
    assert f"boot failed: {reason}" in boot_log
    # Reported without the CLI (boot_report.py, signed as the instance role, which the sandbox checks).
    assert f"boot failure reported to s3://{staged.bucket}/" in boot_log
    report = json.loads(staged.text(staged.layout.instance_report(staged.submission, iid)) or "{}")
    assert report["state"] == contract.BOOT_FAILED and report["reason"] == reason, report
    # Nothing ran: the run is still queued for a host that can boot.
    assert staged.status(staged.run_ids[0])["state"] == "queued" and staged.visible_messages() == 1


def test_cancel_retry_on_failure_and_max_runtime(sandbox: Any, image: str) -> None:
    slow = {"EPOCHS": "30", "SAMPLES": "300", "EPOCH_SECONDS": "3"}
    staged = Staged(sandbox, image, [slow, {**FAST, "FAIL_WITH": "4"}, slow], max_runtime=25,
                    retries={"on_interruption": 2, "on_failure": 1})
    cancelled, flaky, too_long = staged.run_ids
    iid = staged.launch()
    try:
        sandbox.wait_for(lambda: staged.status(cancelled).get("state") == "running", 240, "the first run to start")
        staged.put(staged.layout.run_cancel(cancelled), b"")
        sandbox.wait_state(iid, "terminated", timeout=420)
    finally:
        print(_boot_log(sandbox, iid))
    status = staged.status(cancelled)
    assert status["state"] == "cancelled" and status["exit_code"] == 143, status
    status = staged.status(flaky)
    assert status["state"] == "failed" and status["reason"] == "exit code 4", status
    assert status["attempt"] == 2 and status["failures"] == 1, status
    status = staged.status(too_long)
    assert status["state"] == "failed" and status["reason"] == "max_runtime 25s reached", status
    for run_id in staged.run_ids:  # whatever the ending, the outputs and logs are kept
        keys = staged.keys(staged.layout.run(run_id))
        assert staged.layout.outputs(run_id) + "metrics.json" in keys and staged.layout.container_log(run_id) in keys
    assert staged.visible_messages() == 0
