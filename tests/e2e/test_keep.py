"""Issue 18 (part 2) end to end in the sandbox: `submit --keep-on-failure 2m` on a sweep of two failing runs.
Each failed run's worker keeps its instance (out of the group, tagged `submitter:keep-until`), the stopped
container and the volume's files; `ssh RUN -- ...` works in the window; `cancel RUN` ends one window early; the
other instance is gone after its window, not before."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from submitter import contract

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600


def _cli(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = TIMEOUT
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _status(env: dict[str, str], run_id: str) -> dict[str, Any]:
    out = _cli(env, "status", run_id, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return dict(json.loads(out.stdout)["runs"][0])


def _instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    return dict(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0])


def test_a_failed_runs_instance_is_kept_for_ssh_then_ends_and_cancel_ends_it_early(
    sandbox: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    project = tmp_path / "keep"
    project.mkdir()
    for name in ("train.py", "Dockerfile.train", ".dockerignore"):
        shutil.copy(REPO / name, project / name)
    key = "e2e-keep-" + uuid.uuid4().hex[:8]
    made = _cli(sandbox_env, "init", "--yes", "--key-pair", key, cwd=project)
    assert made.returncode == 0, made.stdout + made.stderr
    spec = project / "keep.yaml"
    spec.write_text(f"name: {key}\n" + textwrap.dedent("""\
        image: {dockerfile: Dockerfile.train, context: .}
        command: ["sh", "-c", "echo kept-$CASE > /data/kept-$CASE.txt; exit 3"]
        sweep: {CASE: [a, b]}
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
        queue: {max_workers: 2}
        limits: {max_runtime: 15m}
    """))
    # Batch cannot keep an instance: refused before anything is created.
    batch = _cli(sandbox_env, "submit", str(spec), "--keep-on-failure", "2m", "--backend", "batch", cwd=project)
    assert batch.returncode == 2 and "keep_on_failure" in batch.stderr and "Traceback" not in batch.stderr, \
        batch.stdout + batch.stderr

    result = _cli(sandbox_env, "submit", str(spec), "--json", "--ssh-key", key, "--keep-on-failure", "2m",
                  cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    (submitted,) = json.loads(result.stdout)
    sub = submitted["submission_id"]
    run_a, run_b = sorted(submitted["runs"])
    ec2, autoscaling = sandbox.client("ec2"), sandbox.client("autoscaling")
    try:
        def kept(run_id: str) -> dict[str, Any] | None:
            st = _status(sandbox_env, run_id)
            return st if st.get("state") == "failed" and st.get(contract.KEPT_UNTIL) else None

        a = sandbox.wait_for(lambda: kept(run_a), TIMEOUT, f"{run_a} to fail and be kept", every=5)
        b = sandbox.wait_for(lambda: kept(run_b), 300, f"{run_b} to fail and be kept", every=5)
        assert a["exit_code"] == 3 and b["exit_code"] == 3
        until_a = contract.parse_iso(a[contract.KEPT_UNTIL])
        assert until_a is not None
        # 2m from when the worker had left its group (tagging and detaching take a few seconds after the end)
        window = (until_a - contract.parse_iso(a["ended_at"])).total_seconds()  # type: ignore[operator]
        assert 115 <= window <= 300, f"a 2m window, after the run's end: {window} s"

        # Out of the group (no slot held), still running, tagged with its window's end.
        group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[f"submitter-{sub}"])
        members = {i["InstanceId"] for g in group["AutoScalingGroups"] for i in g["Instances"]}
        for st in (a, b):
            inst = _instance(ec2, st["instance_id"])
            assert inst["State"]["Name"] == "running"
            assert st["instance_id"] not in members
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            assert tags[contract.TAG_KEEP_UNTIL] == st[contract.KEPT_UNTIL]

        # cancel ends run b's window early (in the background: a's window is short, and ssh goes on meanwhile).
        cancel_b = subprocess.Popen([sys.executable, "-m", "submitter", "--sandbox", "cancel", run_b, "--yes"],
                                    cwd=REPO, env=sandbox_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        shown = _cli(sandbox_env, "status", run_a)
        assert shown.returncode == 0 and "kept until" in shown.stdout, shown.stdout + shown.stderr

        # In the window: ssh reaches the host; the stopped container and the volume's files are there.
        listed = _cli(sandbox_env, "ssh", run_a, "--", "ls", "/", timeout=180)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "etc" in listed.stdout.split()
        looked = _cli(sandbox_env, "ssh", run_a, "--", "sh", "-c",
                      f"docker ps -a --filter name=submitter-{run_a} --format '{{{{.Status}}}}'; "
                      f"cat /mnt/submitter/{a['instance_id']}/data/kept-a.txt", timeout=180)
        assert looked.returncode == 0, looked.stdout + looked.stderr
        assert "Exited (3)" in looked.stdout and "kept-a" in looked.stdout, looked.stdout

        assert datetime.now(timezone.utc) < until_a, "ssh worked within a's window"
        out, err = cancel_b.communicate(timeout=300)
        assert cancel_b.returncode == 0, out + err
        assert "kept window ended early" in out, out + err
        sandbox.wait_state(b["instance_id"], "terminated", timeout=180)
        ended_b = _status(sandbox_env, run_b)
        assert ended_b["state"] == "failed" and ended_b.get(contract.KEPT_END_REASON) == "cancelled", ended_b
        ended_at_b = contract.parse_iso(ended_b[contract.KEPT_ENDED])
        until_b = contract.parse_iso(b[contract.KEPT_UNTIL])
        assert ended_at_b is not None and until_b is not None and ended_at_b < until_b, "ended early"

        # After its window: run a's instance is gone, the window billed to the run.
        sandbox.wait_for(lambda: _instance(ec2, a["instance_id"])["State"]["Name"] in ("shutting-down", "terminated"),
                         300, f"{a['instance_id']} to end after its window", every=5)
        assert datetime.now(timezone.utc) >= until_a, "not before the window's end"
        ended_a = _status(sandbox_env, run_a)
        assert ended_a.get(contract.KEPT_END_REASON) == "window over", ended_a
        if a.get("price"):
            assert float(ended_a["cost"]) > float(a.get("cost") or 0), "the window counts in the run's cost"
    finally:
        if "cancel_b" in locals() and cancel_b.poll() is None:
            cancel_b.kill()
        from submitter import connect
        from submitter.backends.pool import capacity

        aws = connect.aws(connect.resolve(sandbox.settings))
        live = [i["InstanceId"] for i in capacity.live_instances(aws, sub)]
        if live:
            ec2.terminate_instances(InstanceIds=live)
        time.sleep(1)
        capacity.remove(aws, sub)
