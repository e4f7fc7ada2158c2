"""Issue 19 end to end: `compare` and `report` on a sandbox sweep with a succeeded run, an interrupted run that
resumed, and a failed run; the page then drawn in headless Chromium. Runs once submitter/compare.py (helper
metrics) is merged; skipped before."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("submitter.compare", reason="needs submitter/compare.py (issue 19, helper metrics' branch)")

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
EPOCHS = 6
TERMINAL = ("succeeded", "failed", "cancelled")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _status(sandbox: Any, run: str) -> dict[str, Any]:
    body = sandbox.client("s3").get_object(Bucket=sandbox["bucket"], Key=f"submitter/runs/{run}/status.json")["Body"]
    return dict(json.loads(body.read()))


def _log(sandbox: Any, run: str) -> str:
    s3 = sandbox.client("s3")
    prefix = f"submitter/runs/{run}/logs/chunks/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=sandbox["bucket"], Prefix=prefix).get("Contents", []))
    return "".join(s3.get_object(Bucket=sandbox["bucket"], Key=k)["Body"].read().decode() for k in keys)


def test_compare_and_report_on_a_sweep_with_a_failed_and_an_interrupted_run(
    sandbox: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    for name in ("train.py", "Dockerfile.train", ".dockerignore"):
        shutil.copy(REPO / name, tmp_path / name)
    name = "rep-" + uuid.uuid4().hex[:8]
    spec = tmp_path / f"{name}.yaml"
    env = {"EPOCHS": str(EPOCHS), "SAMPLES": "400", "SEED": "7", "EPOCH_SECONDS": "6"}
    spec.write_text(
        f"name: {name}\ncommand: [python, train.py]\nenv: {json.dumps(env)}\n"
        "resources: {instance_types: [c5.large, m5.large], max_price: 0.1, volume_gb: 1}\n"
        "checkpoints: /checkpoints\noutputs: /outputs\nlimits: {max_runtime: 15m}\n"
        "retries: {on_interruption: 2, on_failure: 0}\nqueue: {max_workers: 3}\n"
        "sweep: {LR: [0.1, 0.05, -1]}\n")  # LR=-1: train.py refuses it, so that run fails
    result = _cli(sandbox_env, "submit", str(spec), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (sub,) = json.loads(result.stdout)
    submission, runs = sub["submission_id"], sub["runs"]
    assert len(runs) == 3

    # interrupt the first run once it has finished an epoch; the group replaces the instance and it resumes
    def in_epoch_two() -> str | None:
        st = _status(sandbox, runs[0])
        done = re.findall(rf"epoch (\d+)/{EPOCHS}", _log(sandbox, runs[0]))
        return st.get("instance_id") if st.get("state") == "running" and done else None

    instance = sandbox.wait_for(in_epoch_two, 600, f"{runs[0]} to finish an epoch", every=2)
    interrupted = _cli(sandbox_env, "sandbox", "interrupt", str(instance), "--notice", "30")
    assert interrupted.returncode == 0, interrupted.stderr
    sandbox.wait_for(lambda: all(_status(sandbox, r).get("state") in TERMINAL for r in runs), 900,
                     "every run to end", every=3)

    compared = _cli(sandbox_env, "compare", submission, "--json")
    assert compared.returncode == 0, compared.stderr
    rows = {r["run_id"]: r for r in json.loads(compared.stdout)["runs"]}
    assert [rows[r]["state"] for r in runs] == ["succeeded", "succeeded", "failed"]
    assert rows[runs[0]]["interruptions"] >= 1 and len(rows[runs[0]]["timeline"]) >= 2
    assert rows[runs[1]]["metrics"].get("loss") is not None, json.dumps(rows[runs[1]])[:3000]
    assert rows[runs[1]]["curves"].get("loss"), json.dumps(rows[runs[1]])[:3000]  # the metrics stream's
    assert rows[runs[2]]["curves"] == {}

    page_file = tmp_path / "report.html"
    made = _cli(sandbox_env, "report", submission, "-o", str(page_file))
    assert made.returncode == 0, made.stderr
    assert f"{page_file}: 3 run(s)" in made.stdout
    page = page_file.read_text(encoding="utf-8")
    for run in runs:
        assert f"<td>{run}</td>" in page
    for ending in ("succeeded", "interrupted", "failed"):
        assert f'"name":"{ending}"' in page  # a timeline trace per way an attempt ended

    chromium = shutil.which("chromium")
    if chromium is None:
        return  # the browser side is tests/functional/test_report_chromium.py's (it fails in CI without one)
    shown = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", page_file.as_uri()],
        capture_output=True, text=True, timeout=180, check=True)
    assert [line for line in shown.stderr.splitlines() if ":CONSOLE" in line] == []
    assert shown.stdout.count('class="trace scatter') >= 2  # the loss and accuracy curves of two runs, at least
