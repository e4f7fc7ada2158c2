"""Issue 14 in the IAM-enforcing sandbox, from the instance's side: the credentials a worker host gets from its
IMDS are its instance role's, and the plan's policy lets them write the run's own status but neither the
runtime artefact the boot script runs nor anything of another submission (AccessDenied)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from submitter import contract

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _instance_credentials(imds: str) -> dict[str, Any]:
    """What the host's AWS CLI reads: IMDSv2 token, the role's name, its credentials."""
    imds = imds.rstrip("/")
    put = urllib.request.Request(f"{imds}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    token = urllib.request.urlopen(put, timeout=5).read().decode()

    def get(path: str) -> str:
        request = urllib.request.Request(f"{imds}{path}", headers={"X-aws-ec2-metadata-token": token})
        return str(urllib.request.urlopen(request, timeout=5).read().decode())

    role = get("/latest/meta-data/iam/security-credentials/").strip()
    return dict(json.loads(get(f"/latest/meta-data/iam/security-credentials/{role}")))


def test_the_instance_role_writes_its_run_and_not_the_runtime_nor_another_submission(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path
) -> None:
    name = "e2e-" + uuid.uuid4().hex[:8]
    spec = project / "jobs" / f"{name}.yaml"
    spec.write_text(f"name: {name}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n" + textwrap.dedent("""\
        command: [python, -c, "import time; time.sleep(600)"]
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
        limits: {max_runtime: 20m}
    """))
    submitted = _cli(sandbox_env, "submit", str(spec), "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (sub,) = json.loads(submitted.stdout)
    submission, (run_id,) = sub["submission_id"], sub["runs"]
    layout, bucket, admin = contract.Layout("submitter"), sandbox["bucket"], sandbox_clients("s3")
    # Another submission whose job is named after ours: under `runs/SUB*` its runs were within reach.
    other = f"{submission}-x-20261126-070000-abc123"
    admin.put_object(Bucket=bucket, Key=layout.status(other), Body=b'{"state": "queued"}')
    try:
        def running() -> str | None:
            doc = json.loads(admin.get_object(Bucket=bucket, Key=layout.status(run_id))["Body"].read())
            return doc.get("instance_id") if doc.get("state") == contract.RUNNING else None

        instance = sandbox.wait_for(running, 420, "the run to be running on an instance")
        creds = _instance_credentials(sandbox.wait_host(instance)["imds_endpoint"])
        s3 = boto3.client("s3", endpoint_url=sandbox["endpoint_url"], region_name=sandbox["region"],
                          aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                          aws_session_token=creds["Token"])

        def put(key: str, body: bytes) -> str:
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=body)
            except ClientError as err:
                return str(err.response["Error"]["Code"])
            return "OK"

        own = s3.get_object(Bucket=bucket, Key=layout.status(run_id))["Body"].read()
        assert put(layout.status(run_id), own) == "OK"  # the same document back: the agent carries on
        assert put(layout.runtime(submission), b"print('tampered')") == "AccessDenied"
        assert put(layout.submission_doc(submission), b"{}") == "AccessDenied"
        assert put(layout.run_cancel(run_id), b"{}") == "AccessDenied"
        assert put(layout.status(other), b'{"state": "succeeded"}') == "AccessDenied"
        with pytest.raises(ClientError) as unread:
            s3.get_object(Bucket=bucket, Key=layout.status(other))
        assert unread.value.response["Error"]["Code"] == "AccessDenied"
        assert json.loads(admin.get_object(Bucket=bucket, Key=layout.status(other))["Body"].read()) == {
            "state": "queued"}
    finally:
        cancelled = _cli(sandbox_env, "cancel", submission, "--yes", "--json")
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
