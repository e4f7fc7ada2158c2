"""Issue 19 end to end in the sandbox: `compare` after the example sweep (jobs/exp1.yaml as shipped), and on a
submission with a failed run and a run interrupted mid-way (its curves and timeline span both attempts, and its
curve exists while it still runs). Everything is read back through the CLI, from S3."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 900


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def _compare(env: dict[str, str], target: str, *args: str) -> dict[str, Any]:
    result = _cli(env, "compare", target, "--json", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def test_compare_after_the_example_sweep(sandbox: Any, sandbox_env: dict[str, str], project: Path) -> None:
    shutil.copy(REPO / "jobs" / "exp1.yaml", project / "jobs" / "exp1.yaml")
    result = _cli(sandbox_env, "submit", str(project / "jobs" / "exp1.yaml"), "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads(result.stdout)["runs"]

    doc = _compare(sandbox_env, "exp1")  # the job name: its latest submission
    rows = doc["runs"]
    assert sorted(r["run_id"] for r in rows) == sorted(r["run_id"] for r in runs)
    assert doc["sort"] == {"metric": "accuracy", "direction": "max"}
    assert rows[0]["metrics"]["accuracy"] >= rows[1]["metrics"]["accuracy"] > 0.4  # best first; chance is 1/3
    assert sorted(r["sweep"]["LR"] for r in rows) == ["0.05", "0.1"]
    for row in rows:
        assert row["state"] == "succeeded" and row["attempts"] == 1 and row["interruptions"] == 0
        assert [step for step, _ in row["curves"]["accuracy"]] == [1, 2, 3, 4, 5, 6]  # the stream: one per epoch
        assert row["curves"]["accuracy"][-1][1] == row["metrics"]["accuracy"]
        assert row["runtime_s"] > 0 and row["cost"] is not None
        [attempt] = row["timeline"]
        assert attempt["ending"] == "succeeded" and attempt["instance_id"].startswith("i-")
        assert attempt["instance_type"] in ("c5.large", "m5.large") and attempt["availability_zone"]

    table = list(csv.reader(io.StringIO(_cli(sandbox_env, "compare", "exp1", "--csv", "--sort", "loss").stdout)))
    assert table[0][:3] == ["run_id", "state", "sweep.LR"] and "metric.accuracy" in table[0] and len(table) == 3
    human = _cli(sandbox_env, "compare", "exp1")
    assert human.returncode == 0 and "best first by accuracy" in human.stdout and rows[0]["run_id"] in human.stdout


def test_compare_a_failed_and_an_interrupted_run(sandbox: Any, sandbox_env: dict[str, str], project: Path) -> None:
    name = "cmp-" + uuid.uuid4().hex[:8]
    spec = project / "jobs" / f"{name}.yaml"
    # One run fails after its first epoch; the other is interrupted once and resumes on a new instance. The
    # latter lasts over a minute: under load, its stream can take most of one to show (the heartbeat cadence,
    # slow uploads, slow CLI calls), and it must still be running when the notice comes.
    spec.write_text(
        f"name: {name}\n"
        "image: {dockerfile: ../Dockerfile.train, context: ..}\n"
        "command: 'if [ \"$MODE\" = fail ]; then export FAIL_WITH=3; fi; exec python train.py'\n"
        "env: {EPOCHS: '12', SAMPLES: '300', SEED: '7', EPOCH_SECONDS: '6'}\n"
        "resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}\n"
        "outputs: /outputs\ncheckpoints: /checkpoints\n"
        "limits: {max_runtime: 15m}\n"
        "sweep: {MODE: [fail, resume]}\n"
        "queue: {max_workers: 2}\n"
        "retries: {on_interruption: 2}\n")
    result = _cli(sandbox_env, "submit", str(spec), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (sub,) = json.loads(result.stdout)
    failing, resuming = sub["runs"]

    def streaming() -> dict[str, Any] | None:  # the resuming run's curve, while it still runs
        row = next(r for r in _compare(sandbox_env, sub["submission_id"])["runs"] if r["run_id"] == resuming)
        return row if row["state"] == "running" and row["curves"].get("accuracy") else None

    live = sandbox.wait_for(streaming, 300, f"{resuming}'s metrics stream while it runs", every=2)
    first = live["timeline"][-1]["instance_id"]
    assert live["timeline"][-1]["ended_at"] is None and live["runtime_s"] > 0
    interrupted = _cli(sandbox_env, "sandbox", "interrupt", first, "--notice", "40")
    assert interrupted.returncode == 0, interrupted.stderr

    def ended() -> list[dict[str, Any]] | None:
        rows = _compare(sandbox_env, sub["submission_id"], "--sort", "interruptions:max")["runs"]
        return rows if all(r["state"] in ("succeeded", "failed") for r in rows) else None

    rows = sandbox.wait_for(ended, 600, "both runs to end", every=3)
    by_id = {r["run_id"]: r for r in rows}
    resumed, failed = by_id[resuming], by_id[failing]
    assert resumed["state"] == "succeeded", resumed
    assert resumed["interruptions"] == 1, f"the notice came after the run ended: {resumed}"
    assert [r["run_id"] for r in rows] == [resuming, failing]  # --sort interruptions:max
    assert (resumed["attempts"], resumed["interruptions"]) == (2, 1)
    assert [a["ending"] for a in resumed["timeline"]] == ["interrupted", "succeeded"]
    assert resumed["timeline"][0]["instance_id"] == first != resumed["timeline"][1]["instance_id"]
    assert [step for step, _ in resumed["curves"]["accuracy"]] == list(range(1, 13))  # one curve, both attempts
    assert failed["run_id"] == failing and failed["state"] == "failed" and "exit code 3" in (failed["reason"] or "")
    assert [a["ending"] for a in failed["timeline"]] == ["failed"]
    assert list(failed["curves"]["accuracy"][0]) == [1, failed["metrics"]["accuracy"]]  # its partial metrics.json
    assert _cli(sandbox_env, "compare", sub["submission_id"]).returncode == 0

    from submitter import connect
    from submitter.backends.pool import capacity

    aws = connect.aws(connect.resolve(sandbox.settings))
    capacity.remove(aws, sub["submission_id"])
    assert capacity.live_instances(aws, sub["submission_id"]) == []
