"""Issue 7 end to end: spot interruptions in the sandbox (`submitter sandbox interrupt`, short notice).

The run resumes from its checkpoint on a replacement instance that the group starts by itself; nothing
runs on the user's side meanwhile (the test only watches S3 and EC2).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
EPOCHS = 6
TRAIN_ENV = {"EPOCHS": str(EPOCHS), "SAMPLES": "400", "SEED": "7", "LR": "0.1", "EPOCH_SECONDS": "6"}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _submit(env: dict[str, str], project: Path, on_interruption: int) -> tuple[str, str]:
    for name in ("train.py", "Dockerfile.train", ".dockerignore"):
        shutil.copy(REPO / name, project / name)
    name = "int-" + uuid.uuid4().hex[:8]
    spec = project / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        "command: [python, train.py]\n"
        f"env: {json.dumps(TRAIN_ENV)}\n"
        "resources: {instance_types: [c5.large, m5.large], max_price: 0.1, volume_gb: 1}\n"
        "checkpoints: /checkpoints\n"
        "limits: {max_runtime: 15m}\n"
        f"retries: {{on_interruption: {on_interruption}}}\n"
    )
    result = _cli(env, "submit", str(spec), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (sub,) = json.loads(result.stdout)
    (run,) = sub["runs"]
    return sub["submission_id"], run


def _status(sandbox: Any, run: str) -> dict[str, Any]:
    body = sandbox.client("s3").get_object(Bucket=sandbox["bucket"], Key=f"submitter/runs/{run}/status.json")["Body"]
    return dict(json.loads(body.read()))


def _log(sandbox: Any, run: str) -> str:
    s3 = sandbox.client("s3")
    prefix = f"submitter/runs/{run}/logs/chunks/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=sandbox["bucket"], Prefix=prefix).get("Contents", []))
    return "".join(s3.get_object(Bucket=sandbox["bucket"], Key=k)["Body"].read().decode() for k in keys)


def _interrupt_during_epoch(sandbox: Any, env: dict[str, str], run: str, epoch: int, after: str = "") -> str:
    """Wait until the run is in `epoch` (epoch-1 done) on an instance other than `after`; interrupt it."""
    def in_epoch() -> str | None:
        st = _status(sandbox, run)
        if st.get("state") != "running" or st.get("instance_id") in (None, after):
            return None
        done = [int(n) for n in re.findall(rf"epoch (\d+)/{EPOCHS}", _log(sandbox, run).split("resumed from")[-1])]
        return st["instance_id"] if done and max(done) >= epoch - 1 else None

    instance = sandbox.wait_for(in_epoch, 300, f"{run} to reach epoch {epoch}", every=1)
    result = _cli(env, "sandbox", "interrupt", instance, "--notice", "40")
    assert result.returncode == 0, result.stderr
    return str(instance)


def _wait_end(sandbox: Any, run: str) -> dict[str, Any]:
    return dict(sandbox.wait_for(lambda: _status(sandbox, run) if _status(sandbox, run).get("state") in
                                 ("succeeded", "failed", "cancelled") else None, 600, f"{run} to end", every=2))


def _uninterrupted_metrics(tmp: Path) -> dict[str, Any]:
    """The same training, same seed, never interrupted: run locally with the same program."""
    env = {**os.environ, **TRAIN_ENV, "EPOCH_SECONDS": "0", "CHECKPOINT_DIR": str(tmp / "ck"),
           "OUTPUT_DIR": str(tmp / "out"), "DATA_DIR": str(tmp / "data")}
    subprocess.run([sys.executable, str(REPO / "train.py")], env=env, check=True, capture_output=True, timeout=120)
    return dict(json.loads((tmp / "out" / "metrics.json").read_text()))


def _finish(sandbox: Any, submission: str) -> None:
    """Remove the drained submission's resources (what `submit --wait` or `gc` does) and check nothing lives."""
    from submitter import connect
    from submitter.backends.pool import capacity

    aws = connect.aws(connect.resolve(sandbox.settings))
    capacity.remove(aws, submission)
    assert capacity.live_instances(aws, submission) == []


def _result_metrics(sandbox: Any, run: str) -> dict[str, Any]:
    key = f"submitter/runs/{run}/outputs/metrics.json"
    return dict(json.loads(sandbox.client("s3").get_object(Bucket=sandbox["bucket"], Key=key)["Body"].read()))


def _same_training(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("loss", "accuracy", "history", "epochs"):
        assert a[key] == b[key], key


def test_an_interrupted_run_resumes_on_a_new_instance_with_identical_results(
    sandbox: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    submission, run = _submit(sandbox_env, tmp_path, on_interruption=3)
    k = 3
    first = _interrupt_during_epoch(sandbox, sandbox_env, run, epoch=k)
    final = _wait_end(sandbox, run)
    assert final["state"] == "succeeded", final
    assert final["instance_id"] != first, "the run completed on a different instance"
    assert final["interruptions"] == 1
    resumed = [int(n) for n in re.findall(r"resumed from epoch (\d+)", _log(sandbox, run))]
    assert resumed and resumed[-1] >= k - 1, f"resumed from {resumed}, interrupted during epoch {k}"
    _same_training(_result_metrics(sandbox, run), _uninterrupted_metrics(tmp_path / "ref"))
    _finish(sandbox, submission)


def test_two_interruptions_in_a_row_also_complete(sandbox: Any, sandbox_env: dict[str, str], tmp_path: Path) -> None:
    submission, run = _submit(sandbox_env, tmp_path, on_interruption=3)
    first = _interrupt_during_epoch(sandbox, sandbox_env, run, epoch=2)
    second = _interrupt_during_epoch(sandbox, sandbox_env, run, epoch=4, after=first)
    final = _wait_end(sandbox, run)
    assert final["state"] == "succeeded", final
    assert final["interruptions"] == 2 and final["instance_id"] not in (first, second)
    _same_training(_result_metrics(sandbox, run), _uninterrupted_metrics(tmp_path / "ref"))
    _finish(sandbox, submission)


def test_retries_exhausted_fails_with_the_reason_and_keeps_outputs_and_checkpoints(
    sandbox: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    submission, run = _submit(sandbox_env, tmp_path, on_interruption=1)
    first = _interrupt_during_epoch(sandbox, sandbox_env, run, epoch=2)
    _interrupt_during_epoch(sandbox, sandbox_env, run, epoch=3, after=first)
    final = _wait_end(sandbox, run)
    assert final["state"] == "failed", final
    assert "interrupted 2 times" in final["reason"] and "on_interruption is 1" in final["reason"], final
    s3 = sandbox.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=sandbox["bucket"], Prefix=f"submitter/runs/{run}/")["Contents"]]
    assert any("/checkpoints/" in k for k in keys), keys
    assert any(k.endswith("/outputs/metrics.json") for k in keys), keys
    _finish(sandbox, submission)
