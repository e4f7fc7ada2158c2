"""Issue 18 (the monthly budget) end to end in the sandbox: workers book their attempts in the ledger; a
worker whose month has reached SUBMITTER_BUDGET finishes its run and takes no other; `submit` then refuses
with the figures, before anything is created.

A submission's own worst case is checked against the budget before it is accepted, so on its own it can never
reach it: what reaches it here is the account-wide spend, a second submission (submitted without a budget, as
a teammate without SUBMITTER_BUDGET would) running on a type 7x the price while the first submission's first
run runs. Figures from the sandbox price table (cheapest zone): t3.medium $0.0113/h, r5.xlarge $0.0829/h. The
budget is the first submission's worst case (2 runs x 5 min on t3.medium, plus EBS), about $0.0019: r5.xlarge
spends it in about 83 s, and the first run lasts 240 s."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from submitter import contract

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 900


def _spec(project: Path, body: str) -> Path:
    name = "e2e-" + uuid.uuid4().hex[:8]
    path = project / "jobs" / f"{name}.yaml"
    path.write_text(f"name: {name}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n" + textwrap.dedent(body))
    return path


def _args(*args: str) -> list[str]:
    return [sys.executable, "-m", "submitter", "--sandbox", *args]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_args(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def _runs(env: dict[str, str], target: str) -> list[dict[str, Any]]:
    """The runs of a JOB, SUBMISSION or RUN; [] before there are any."""
    result = _cli(env, "status", target, "--all", "--json")
    return list(json.loads(result.stdout).get("runs") or []) if result.returncode == 0 else []


def test_the_budget_lets_the_current_run_finish_stops_the_worker_and_refuses_the_next_submit(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path
) -> None:
    # A prefix of its own: the month's ledger is everything under the bucket and prefix, and the session's other
    # tests book their runs under the shared one.
    prefix = "budget-" + uuid.uuid4().hex[:8]
    env = {**sandbox_env, "SUBMITTER_PREFIX": prefix}
    sweep = _spec(project, """\
        command: [python, -c, "import time; time.sleep(240); print('done')"]
        resources: {instance_types: [t3.medium], max_price: 0.05, volume_gb: 1}
        limits: {max_runtime: 5m}
        sweep: {LR: [0.1, 0.05]}
        queue: {max_workers: 1}
    """)
    plan = json.loads(_cli(env, "submit", str(sweep), "--dry-run", "--json").stdout)
    worst = plan["estimate"]["total_at_most"]
    budget = round(worst * 1.02, 6)  # the sweep's worst case fits; r5.xlarge passes it in under 90 s
    with_budget = {**env, "SUBMITTER_BUDGET": str(budget)}
    shown = json.loads(_cli(with_budget, "submit", str(sweep), "--dry-run", "--json").stdout)["budget"]
    assert shown["budget"] == budget and shown["this_submission"] == worst and shown["spent"] is None

    first = subprocess.Popen(_args("submit", str(sweep), "--wait", "--json"), cwd=REPO, env=with_budget,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The sweep's first run is running (its worker found the month under the budget): now the other spend.
        deadline = time.monotonic() + TIMEOUT
        running: list[dict[str, Any]] = []
        while time.monotonic() < deadline and first.poll() is None and not running:
            running = [r for r in _runs(env, sweep.stem) if r.get("state") == contract.RUNNING]
            time.sleep(3)
        assert running and first.poll() is None, "the sweep's first run never ran"
        submission = str(running[0]["submission_id"])
        other = _spec(project, """\
            command: [python, -c, "import time; time.sleep(100)"]
            resources: {instance_types: [r5.xlarge], max_price: 0.2, volume_gb: 1}
            limits: {max_runtime: 10m}
        """)
        spender = _cli(env, "submit", str(other), "--wait", "--json")  # no SUBMITTER_BUDGET: not checked
        assert spender.returncode == 0, spender.stdout + spender.stderr
        (spent_run,) = json.loads(spender.stdout)["runs"]
        assert spent_run["cost"] >= budget, spent_run
        out, err = first.communicate(timeout=TIMEOUT)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1, out + err  # a run did not succeed
    runs = json.loads(out)["runs"]
    assert [r["state"] for r in runs] == [contract.SUCCEEDED, contract.CANCELLED], runs
    assert "monthly budget reached" in runs[1]["reason"] and "not started" in runs[1]["reason"], runs[1]
    assert runs[1].get("started_at") is None and runs[1].get("attempt", 0) == 0, "the second run never started"
    # The worker said why it left, and left the group for good: no replacement was launched.
    s3, bucket, layout = sandbox_clients("s3"), sandbox["bucket"], contract.Layout(prefix)
    reports = sandbox.wait_for(lambda: [o["Key"] for o in s3.list_objects_v2(
        Bucket=bucket, Prefix=layout.instances(submission)).get("Contents", [])], 120, "the worker's report")
    assert len(reports) == 1, reports
    report = json.loads(s3.get_object(Bucket=bucket, Key=reports[0])["Body"].read())
    assert report["state"] == contract.DRAINED and "monthly budget reached" in report["reason"], report

    # The ledger: one entry per attempt (older renewals removed), the cost in its name.
    month = contract.month_of()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=layout.ledger(month)).get("Contents", [])]
    attempts = contract.ledger_attempts(layout.ledger(month), keys)
    assert len(keys) == len(attempts) == 2, keys
    assert attempts[(runs[0]["run_id"], 1)] == pytest.approx(runs[0]["cost"], abs=1e-6)
    assert attempts[(spent_run["run_id"], 1)] == pytest.approx(spent_run["cost"], abs=1e-6)
    view = json.loads(_cli(with_budget, "cost", "--month", month, "--json").stdout)
    assert view["budget"] == budget and view["reached"] is True and view["spent"] >= budget
    assert {s["submission_id"] for s in view["submissions"]} == {submission, spent_run["submission_id"]}

    # The next submit is refused, with the figures, before anything is built or created.
    refused = _cli(with_budget, "submit", str(sweep))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = refused.stderr
    assert "SUBMITTER_BUDGET" in message and "would pass the monthly budget" in message, message
    assert f"budget: {contract.usd(budget)}" in message and f"spent {contract.usd(view['spent'])}" in message
    assert "remaining $-" in message and f"this submission {contract.usd(worst)}" in message, message
    assert "Traceback" not in message
    assert {r["submission_id"] for r in _runs(env, sweep.stem)} == {submission}, "nothing new was staged"
