"""Issue 21 end to end in the sandbox: a run of the example job reproduced from its record alone, on "another
machine" (another working directory, an empty home, the same settings through the environment, no spec file or
source tree), gives the same final metrics; a rerun with one value changed differs from it in exactly that."""

from __future__ import annotations

import json
import os
import random
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
TIMEOUT = 900


def _cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def _elsewhere(sandbox_env: dict[str, str], home: Path) -> dict[str, str]:
    """Another machine with the same settings: the AWS endpoint and credentials, the bucket and the registry,
    given through the environment. Not sandbox mode, which reads the sandbox's connection from the first
    machine's SUBMITTER_HOME: this home starts empty."""
    keep = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "SUBMITTER_BUCKET", "SUBMITTER_REGISTRY")
    env = {name: sandbox_env[name] for name in keep}
    env.update({"PATH": os.environ["PATH"], "HOME": str(home), "SUBMITTER_HOME": str(home / ".submitter")})
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _dataset(directory: Path) -> None:
    """A small three-class CSV: the run reads it from a staged input, so the rerun must stage the same bytes."""
    directory.mkdir()
    rng = random.Random(7)
    rows = []
    for _ in range(240):
        label = rng.randrange(3)
        rows.append(f"{rng.gauss(label, 0.6):.4f},{rng.gauss(-label, 0.6):.4f},{label}")
    (directory / "train.csv").write_text("\n".join(rows) + "\n")


def _metrics(clients: Any, bucket: str, run_id: str) -> dict[str, Any]:
    key = contract.Layout("submitter").final_metrics(run_id)
    return dict(json.loads(clients("s3").get_object(Bucket=bucket, Key=key)["Body"].read()))


def test_a_rerun_on_another_machine_gives_the_same_metrics_and_diff_shows_only_the_change(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path, tmp_path: Path
) -> None:
    _dataset(project / "dataset")
    name = "e2e-" + uuid.uuid4().hex[:8]
    spec = project / "jobs" / f"{name}.yaml"
    spec.write_text(f"name: {name}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n" + textwrap.dedent("""\
        command: [python, train.py]
        env: {EPOCHS: "2", SEED: "3", HIDDEN: "8", DATA_DIR: /data/set}
        inputs:
          - {source: ../dataset, target: /data/set}
        resources: {instance_types: [c5.large, m5.large], max_price: 0.1, volume_gb: 1}
        checkpoints: /checkpoints
        limits: {max_runtime: 10m, max_cost: 1.0}
        sweep: {LR: ["0.1"]}
    """))
    first = _cli(sandbox_env, "--sandbox", "submit", str(spec), "--wait", "--json", cwd=REPO)
    assert first.returncode == 0, first.stdout + first.stderr
    (original,) = [r["run_id"] for r in json.loads(first.stdout)["runs"]]

    home = tmp_path / "elsewhere"
    home.mkdir()
    there = _elsewhere(sandbox_env, home)
    dry = _cli(there, "rerun", original, "--dry-run", "--json", cwd=home)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["rerun"] == {"reproduces": original, "overrides": {}, "warnings": []}
    assert planned["image"]["prebuilt"] and "@sha256:" in planned["image"]["uri"]
    assert planned["runs"][0]["env"] == {"EPOCHS": "2", "SEED": "3", "HIDDEN": "8", "DATA_DIR": "/data/set",
                                         "LR": "0.1"}

    # The plain rerun and one with LR changed, at once: each is a submission of its own.
    same = subprocess.Popen([sys.executable, "-m", "submitter", "rerun", original, "--wait", "--json"], cwd=home,
                            env=there, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    changed = _cli(there, "rerun", original, "--set", "LR=0.05", "--wait", "--json", cwd=home)
    out, err = same.communicate(timeout=TIMEOUT)
    assert same.returncode == 0, out + err
    assert changed.returncode == 0, changed.stdout + changed.stderr
    twin = json.loads(out)
    other = json.loads(changed.stdout)
    assert twin["reproduces"] == original and [s["state"] for s in twin["states"]] == ["succeeded"]
    assert other["overrides"] == {"env": {"LR": {"was": "0.1", "now": "0.05"}}}
    (twin_run,), (other_run,) = twin["runs"], other["runs"]

    bucket = sandbox["bucket"]
    assert _metrics(sandbox_clients, bucket, twin_run) == _metrics(sandbox_clients, bucket, original)
    assert _metrics(sandbox_clients, bucket, other_run)["hyper_parameters"]["lr"] == 0.05

    verdict = _cli(there, "diff", original, twin_run, "--json", cwd=home)
    assert verdict.returncode == 0, verdict.stderr
    result = json.loads(verdict.stdout)
    assert result["same_experiment"] is True, result["experiment_differs"]
    assert not [f for f in result["outcome_differs"] if f.startswith("metrics.")]
    host = {r["field"]: r["a"] for r in result["outcome"] if r["field"].startswith("host.")}
    assert host.get("host.ami_id", "").startswith("ami-") and host.get("host.docker_version"), host

    shown = _cli(there, "diff", original, other_run, cwd=home)
    assert shown.returncode == 0, shown.stderr
    assert "different experiments: 1 field(s) differ: sweep.LR" in shown.stdout, shown.stdout
    assert "0.1  ->  0.05" in shown.stdout
    as_json = json.loads(_cli(there, "diff", original, other_run, "--json", cwd=home).stdout)
    assert as_json["experiment_differs"] == ["sweep.LR"]

    # It needed nothing local: its home kept only caches (the account id; the placement's instance reports and
    # market data), never the source of truth.
    kept = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    assert ".submitter/accounts.json" in kept, kept
    assert all(k == ".submitter/accounts.json" or k.startswith(".submitter/cache/") for k in kept), kept
