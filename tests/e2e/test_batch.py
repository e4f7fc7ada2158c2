"""The AWS Batch backend end to end in the sandbox (issue 16): `init --batch`, then a sweep submitted with
`--backend batch` runs its containers on the real engine through moto's Batch (submitter/sandbox/batch.py) as
one array job, the wrapper in each container acting as the job role; `status`, `logs`, `results` and `cancel`
work on it as on the worker pool; a failed run gets its re-run from Batch's retryStrategy."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from submitter.sandbox import batch as sandbox_batch
from submitter.sandbox import state as st

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600
# boto3 and what it imports, as `pip install boto3` puts them in an image (docs/batch.md: the wrapper needs boto3
# or the AWS CLI). Copied from this machine's site-packages: image builds here have no package index.
BOTO3 = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
DOCKERFILE = """\
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/boto3
COPY boto3-lib /opt/boto3
RUN command -v python >/dev/null 2>&1 || ln -s "$(command -v python3)" /usr/local/bin/python \\
 && mkdir -p /app /checkpoints /outputs /data && python3 -c "import boto3"
WORKDIR /app
COPY train.py /app/
CMD ["python", "train.py"]
"""


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def _boto3_tree(target: Path) -> None:
    target.mkdir()
    for name in BOTO3:
        module = importlib.import_module(name)
        source = Path(str(module.__file__))
        if source.name == "__init__.py":
            # botocore's CA bundle is a *.pem, which the build refuses in a context; http endpoints need none
            shutil.copytree(source.parent, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pem"))
        else:
            shutil.copy(source, target / source.name)


@pytest.fixture(scope="module")
def batch_project(sandbox: Any, sandbox_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose image has boto3, after `init --batch` (run twice: the second changes nothing)."""
    project = tmp_path_factory.mktemp("batch")
    shutil.copy(REPO / "train.py", project / "train.py")
    (project / "Dockerfile.batch").write_text(DOCKERFILE)
    (project / ".dockerignore").write_text("*\n!train.py\n!boto3-lib\n")
    _boto3_tree(project / "boto3-lib")
    (project / "jobs").mkdir()
    made = _cli(sandbox_env, project, "init", "--yes", "--batch")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "created compute environment submitter-spot" in made.stdout, made.stdout
    assert "created job queue submitter" in made.stdout, made.stdout
    again = _cli(sandbox_env, project, "init", "--yes", "--batch")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "found compute environment submitter-spot" in again.stdout, again.stdout
    assert "created compute environment" not in again.stdout and "created job queue" not in again.stdout
    role = sandbox.client("iam").list_attached_role_policies(RoleName="submitter-batch-instance")
    assert [p["PolicyName"] for p in role["AttachedPolicies"]] == ["AmazonEC2ContainerServiceforEC2Role"]
    return project


def _spec(project: Path, body: str) -> tuple[Path, str]:
    name = "e2e-batch-" + uuid.uuid4().hex[:8]
    path = project / "jobs" / f"{name}.yaml"
    path.write_text(f"name: {name}\nimage: {{dockerfile: ../Dockerfile.batch, context: ..}}\n"
                    + textwrap.dedent(body))
    return path, name


def _job_containers(sandbox: Any) -> list[Any]:
    import docker

    label = st.home_hash(sandbox.settings.home)
    return list(docker.from_env().containers.list(
        all=True, filters={"label": [f"{st.LABEL}={label}", sandbox_batch.JOB_LABEL]}))


def test_a_batch_sweep_runs_its_containers_and_status_logs_results_work(
    sandbox: Any, sandbox_env: dict[str, str], batch_project: Path
) -> None:
    spec, name = _spec(batch_project, """\
        command: [python, train.py]
        env: {EPOCHS: "2", SAMPLES: "300"}
        resources: {instance_types: [c5.large]}
        checkpoints: /checkpoints
        limits: {max_runtime: 10m}
        sweep: {LR: [0.1, 0.05]}
    """)
    result = _cli(sandbox_env, batch_project, "submit", str(spec), "--backend", "batch", "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    (submission,) = out["submissions"]
    sub_id = submission["submission_id"]
    runs = out["runs"]
    assert [r["state"] for r in runs] == ["succeeded", "succeeded"], runs

    # One array job of two children, each of which ran its own run (AWS_BATCH_JOB_ARRAY_INDEX) and succeeded.
    s3, bucket = sandbox.client("s3"), sandbox["bucket"]
    record = json.loads(s3.get_object(Bucket=bucket, Key=f"submitter/submissions/{sub_id}/batch.json")["Body"].read())
    assert record["array_size"] == 2
    # Each run's final status is its wrapper's last write inside the container; Batch marks the job once the
    # container has exited (and the array parent after its children), so those statuses may trail `--wait`.
    batch = sandbox.client("batch")

    def described() -> list[dict[str, Any]]:
        return batch.describe_jobs(jobs=[record["job_id"], *record["runs"].values()])["jobs"]

    sandbox.wait_for(lambda: all(j["status"] in ("SUCCEEDED", "FAILED") for j in described()), 120,
                     "the Batch jobs to end")
    jobs = described()
    assert {j["jobId"]: j["status"] for j in jobs} == {j["jobId"]: "SUCCEEDED" for j in jobs}, jobs
    assert [record["runs"][r["run_id"]] for r in runs] == [f"{record['job_id']}:0", f"{record['job_id']}:1"]

    status = _cli(sandbox_env, batch_project, "status", sub_id, "--json")
    assert status.returncode == 0, status.stderr
    shown = {r["run_id"]: r for r in json.loads(status.stdout)["runs"]}
    for run in runs:
        assert shown[run["run_id"]]["state"] == "succeeded" and shown[run["run_id"]]["exit_code"] == 0
        assert shown[run["run_id"]]["batch_job_id"] == record["runs"][run["run_id"]]

    for run in runs:
        logs = _cli(sandbox_env, batch_project, "logs", run["run_id"])
        assert logs.returncode == 0, logs.stderr
        assert "epoch 2/2" in logs.stdout, logs.stdout[-2000:]
        agent = _cli(sandbox_env, batch_project, "logs", run["run_id"], "--agent")
        assert agent.returncode == 0 and f"(batch_job_id {record['runs'][run['run_id']]})" in agent.stdout, agent.stdout

    dest = batch_project / "got"
    got = _cli(sandbox_env, batch_project, "results", sub_id, "--dest", str(dest))
    assert got.returncode == 0, got.stderr
    for run, lr in zip(runs, (0.1, 0.05), strict=True):  # each array child ran its own sweep member
        metrics = json.loads((dest / run["run_id"] / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["accuracy"] > 0.4, metrics
        assert metrics["hyper_parameters"]["lr"] == lr, metrics

    # The containers acted as the submission's job role (the sandbox enforces its policy), never as an admin.
    daemon_log = st.Paths(sandbox.settings.home / "sandbox").daemon_log.read_text()
    assert f"issued credentials of arn:aws:iam::{sandbox['account_id']}:role/submitter-{sub_id}" in daemon_log
    # --wait removed the job role; no job container is left on the engine.
    roles = [r["RoleName"] for r in sandbox.client("iam").list_roles()["Roles"]]
    assert f"submitter-{sub_id}" not in roles
    sandbox.wait_for(lambda: _job_containers(sandbox) == [], 120, "the job containers to be removed")


def test_cancel_stops_a_running_batch_job_gracefully_and_removes_its_role(
    sandbox: Any, sandbox_env: dict[str, str], batch_project: Path
) -> None:
    spec, _ = _spec(batch_project, """\
        command: [python, train.py]
        env: {EPOCHS: "60", SAMPLES: "300", EPOCH_SECONDS: "3"}
        resources: {instance_types: [c5.large], backend: batch}
        limits: {max_runtime: 20m}
    """)
    submitted = _cli(sandbox_env, batch_project, "submit", str(spec), "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (sub,) = json.loads(submitted.stdout)
    sub_id, (run_id,) = sub["submission_id"], sub["runs"]

    def running() -> bool:
        out = _cli(sandbox_env, batch_project, "status", run_id, "--json")
        runs = json.loads(out.stdout)["runs"] if out.returncode == 0 else []
        return bool(runs) and runs[0].get("state") == "running" and bool(runs[0].get("batch_job_id"))

    sandbox.wait_for(running, 180, f"{run_id} to be running on Batch", every=2)
    s3, bucket = sandbox.client("s3"), sandbox["bucket"]
    sandbox.wait_for(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"submitter/runs/{run_id}/logs/chunks/")
                     .get("KeyCount"), 60, "the run's first streamed log chunk")
    result = _cli(sandbox_env, batch_project, "cancel", sub_id, "--yes", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    (run,) = out["runs"]
    assert run["state"] == "cancelled", run
    assert out["forced"] == [], "the wrapper confirmed: it stopped the command and uploaded"
    metrics = json.loads(s3.get_object(Bucket=bucket, Key=f"submitter/runs/{run_id}/outputs/metrics.json")
                         ["Body"].read())
    assert metrics["status"] == "interrupted" and metrics["history"], "outputs so far were uploaded"
    record = json.loads(s3.get_object(Bucket=bucket, Key=f"submitter/submissions/{sub_id}/batch.json")["Body"].read())
    job = sandbox.wait_for(lambda: [j for j in sandbox.client("batch").describe_jobs(jobs=[record["job_id"]])["jobs"]
                                    if j["status"] == "FAILED"], 60, "the terminated Batch job to be FAILED")[0]
    assert job["statusReason"] == "cancelled with submitter cancel", job
    assert f"submitter-{sub_id}" in out["removed"][0], out["removed"]
    sandbox.wait_for(lambda: _job_containers(sandbox) == [], 60, "the job's container to be removed")


def test_a_failed_run_is_run_again_by_batchs_retry_strategy_then_fails(
    sandbox: Any, sandbox_env: dict[str, str], batch_project: Path
) -> None:
    """retries.on_failure 1: the wrapper asks for another attempt (exit 75), the job definition's retryStrategy
    gives it one (AWS_BATCH_JOB_ATTEMPT 2), and that attempt ends the run as failed with the command's code."""
    spec, _ = _spec(batch_project, """\
        command: [python, train.py]
        env: {EPOCHS: "2", SAMPLES: "300", FAIL_WITH: "3"}
        resources: {instance_types: [c5.large], backend: batch}
        retries: {on_failure: 1}
    """)
    result = _cli(sandbox_env, batch_project, "submit", str(spec), "--wait", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    out = json.loads(result.stdout)
    (run,) = out["runs"]
    assert run["state"] == "failed" and run["exit_code"] == 3, run
    sub_id = out["submissions"][0]["submission_id"]
    s3, bucket = sandbox.client("s3"), sandbox["bucket"]
    record = json.loads(s3.get_object(Bucket=bucket, Key=f"submitter/submissions/{sub_id}/batch.json")["Body"].read())
    (job,) = sandbox.client("batch").describe_jobs(jobs=[record["job_id"]])["jobs"]
    assert job["status"] == "FAILED" and [a["container"]["exitCode"] for a in job["attempts"]] == [75, 1], job
    agent = _cli(sandbox_env, batch_project, "logs", run["run_id"], "--agent")
    assert "attempt 2 (batch_job_id" in agent.stdout, agent.stdout
