"""The container never holds the instance role (issue 14), end to end in the IAM-enforcing sandbox: a probe job
looks for AWS credentials everywhere a hostile job would (IMDS, the container-credentials endpoint with and
without its token). With `permissions` it gets the job role and nothing more; without, nothing at all.

The sandbox's containers cannot reach moto (it listens on this machine's loopback), so the probe hands the
credentials it obtained back through its outputs and the test uses exactly those against the API: what the
job could do with them is what these calls can do."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from submitter import contract

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600

PROBE = '''\
import json, os, urllib.error, urllib.request

def get(url, headers=None, method="GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=b"" if method == "PUT" else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except Exception as exc:
        return None, repr(exc)

out = {"env": sorted(k for k in os.environ if k.startswith("AWS_"))}
uri = os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
if uri:
    out["without_token"] = get(uri)[0]
    code, body = get(uri, {"Authorization": os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]})
    out["endpoint"] = code
    out["creds"] = json.loads(body) if code == 200 else None
imds = "http://169.254.169.254/latest/"
code, token = get(imds + "api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT")
out["imds_token"] = code
code, body = get(imds + "meta-data/iam/security-credentials/", {"X-aws-ec2-metadata-token": token or ""})
out["imds_credentials"] = [code, body[:300]]
os.makedirs("/outputs", exist_ok=True)
with open("/outputs/probe.json", "w") as sink:
    json.dump(out, sink)
print(json.dumps({k: v for k, v in out.items() if k != "creds"}))
'''


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _spec(project: Path, body: str) -> Path:
    name = "e2e-p5-" + uuid.uuid4().hex[:6]
    path = project / "jobs" / f"{name}.yaml"
    path.write_text(f"name: {name}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n"
                    "command: [python, train.py]\n"
                    "resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}\n"
                    "limits: {max_runtime: 10m}\n" + textwrap.dedent(body))
    return path


def _finish(process: subprocess.Popen[str]) -> Any:
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, out + err
    return json.loads(out)


def _ended(sandbox: Any, env: dict[str, str], submission: str) -> dict[str, Any]:
    """The submission's one run once it has ended. Not `submit --wait`: that removes the job role at the end,
    and a deleted role's sessions are refused (on AWS too), so its credentials could no longer be tried."""
    def ended() -> dict[str, Any] | None:
        out = _finish(_cli(env, "status", submission, "--json"))
        (run,) = out["runs"]
        return run if run["state"] in contract.TERMINAL else None

    return dict(sandbox.wait_for(ended, TIMEOUT, f"{submission} to end", every=3))


def _probe(s3: Any, bucket: str, run_id: str) -> dict[str, Any]:
    key = contract.Layout("submitter").outputs(run_id) + "probe.json"
    return dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def _code(call: Any) -> str:
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "OK"


def test_the_job_role_is_all_a_job_gets_and_only_when_it_asks(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path
) -> None:
    import boto3

    (project / "train.py").write_text(PROBE)  # the image copies train.py: the probe is the job
    s3 = sandbox_clients("s3")
    data = "e2e-p5-" + uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=data)
    s3.put_object(Bucket=data, Key="declared/part-0.txt", Body=b"yours")
    s3.put_object(Bucket=data, Key="undeclared/part-0.txt", Body=b"not yours")

    asking = _cli(sandbox_env, "submit", str(_spec(project, f"""\
        permissions: {{s3_read: ["s3://{data}/declared/"]}}
    """)), "--json")
    silent = _cli(sandbox_env, "submit", str(_spec(project, "")), "--json")
    (asked,), (plain,) = _finish(asking), _finish(silent)  # without --wait: one summary per spec
    submission = asked["submission_id"]
    with_role = {"runs": [_ended(sandbox, sandbox_env, submission)]}
    without = {"runs": [_ended(sandbox, sandbox_env, plain["submission_id"])]}
    bucket = sandbox["bucket"]

    # No permissions: no endpoint, no AWS variables, no credentials from IMDS.
    (run,) = without["runs"]
    assert run["state"] == "succeeded", run
    probe = _probe(s3, bucket, run["run_id"])
    assert probe["env"] == [] and "creds" not in probe, probe
    assert probe["imds_credentials"][0] != 200 and "AccessKeyId" not in probe["imds_credentials"][1], probe

    # Permissions: the endpoint serves the job role to the token holder only; IMDS still gives nothing.
    (run,) = with_role["runs"]
    assert run["state"] == "succeeded", run
    probe = _probe(s3, bucket, run["run_id"])
    assert probe["env"] == ["AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI"], probe
    assert probe["without_token"] == 401 and probe["endpoint"] == 200, probe
    assert "AccessKeyId" not in probe["imds_credentials"][1], probe
    creds = probe["creds"]
    job = boto3.client("s3", endpoint_url=sandbox["endpoint_url"], region_name=sandbox["region"],
                       aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                       aws_session_token=creds["Token"])
    assert job.get_object(Bucket=data, Key="declared/part-0.txt")["Body"].read() == b"yours"
    # What it did not declare, the runtime every later worker runs, another submission's status: denied.
    other = without["runs"][0]["run_id"]
    layout = contract.Layout("submitter")
    assert _code(lambda: job.get_object(Bucket=data, Key="undeclared/part-0.txt")) == "AccessDenied"
    assert _code(lambda: job.put_object(Bucket=data, Key="declared/x", Body=b"x")) == "AccessDenied"
    assert _code(lambda: job.put_object(Bucket=bucket, Key=layout.runtime(submission), Body=b"x")) == "AccessDenied"
    assert _code(lambda: job.put_object(Bucket=bucket, Key=layout.status(other), Body=b"{}")) == "AccessDenied"
    # Both finished: gc removes their roles (and the rest), so nothing of this test stays behind.
    _finish(_cli(sandbox_env, "gc", "--yes", "--json"))
    roles = [r["RoleName"] for r in sandbox_clients("iam").list_roles()["Roles"]]
    assert not [r for r in roles if submission in r], roles

