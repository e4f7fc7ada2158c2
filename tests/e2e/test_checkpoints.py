"""Issue 18 end to end: checkpoint integrity and staleness in the sandbox.

One run, three attempts on one worker (retries.on_failure): attempt 1 checkpoints `generation-1` and fails, so
its final sync writes manifest 1; attempt 2 writes `generation-2` (its state file, then many weight files) and fails,
and the test kills the `aws s3 cp` of that final sync mid-way inside the simulated host: the sync is cut off, no
manifest 2 is written; attempt 3 must resume from manifest 1, then stops checkpointing long enough for the
stale warning (limits.checkpoint_warn_after: 1m) to show in its status, `status` and the agent log (once).
"""

from __future__ import annotations

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
PADS = 40

JOB = f"""
import os, pathlib, sys, time
ck = pathlib.Path(os.environ["SUBMITTER_CHECKPOINT_DIR"])
attempt = int(os.environ["SUBMITTER_ATTEMPT"])
state = ck / "state.txt"
print("attempt", attempt, "restored:", state.read_text() if state.exists() else "nothing",
      "files:", sorted(p.name for p in ck.iterdir()), flush=True)

def save(name, data):
    tmp = ck / (".tmp-" + name)
    tmp.write_bytes(data)
    tmp.rename(ck / name)

if attempt == 1:
    save("state.txt", b"generation-1")
    sys.exit(3)
if attempt == 2:
    # state.txt sorts before the weights, so it is uploaded first: a sync cut off after it would, without a
    # manifest, resume generation 2's state with generation 1's weights (or some of generation 2's)
    save("state.txt", b"generation-2")
    for i in range({PADS}):
        save("weights-%02d.bin" % i, os.urandom(256 * 1024))
    sys.exit(3)
time.sleep(110)  # attempt 3: no new checkpoint from here on
print("done", flush=True)
"""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _get(sandbox: Any, key: str) -> bytes | None:
    s3 = sandbox.client("s3")
    try:
        return bytes(s3.get_object(Bucket=sandbox["bucket"], Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _keys(sandbox: Any, prefix: str) -> list[str]:
    pages = sandbox.client("s3").get_paginator("list_objects_v2").paginate(Bucket=sandbox["bucket"], Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _status(sandbox: Any, run: str) -> dict[str, Any]:
    return dict(json.loads(_get(sandbox, f"submitter/runs/{run}/status.json") or b"{}"))


def _log(sandbox: Any, run: str) -> str:
    keys = _keys(sandbox, f"submitter/runs/{run}/logs/chunks/")
    return "".join((_get(sandbox, k) or b"").decode() for k in keys)


KILL = """
import os, signal, sys
wanted = sys.argv[1].encode()
killed = []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\\0")
    except OSError:
        continue
    if cmd[1:3] == [b"-m", b"awscli"] and any(wanted in part for part in cmd):  # the CLI (images.py), not us
        os.kill(int(pid), signal.SIGKILL)
        killed.append(pid)
print(" ".join(killed))
"""


def _cut_off_sync(sandbox: Any, run: str, generation: str) -> None:
    """As soon as the sync's first file of `generation` is in S3, SIGKILL the `aws` upload running in the host."""
    sandbox.wait_for(lambda: _keys(sandbox, generation), 300, f"{run}'s sync of {generation} to begin", every=0.2)
    instance = _status(sandbox, run)["instance_id"]
    container = sandbox.instance_status(instance)["host_container"]

    def kill() -> str:
        done = subprocess.run(["docker", "exec", container, "python3", "-c", KILL, generation], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    sandbox.wait_for(kill, 30, f"an aws s3 cp of {generation} to kill in {container}", every=0.1)


def test_a_sync_cut_off_mid_upload_resumes_from_the_previous_manifest_and_a_quiet_job_warns(
    sandbox: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    shutil.copy(REPO / "Dockerfile.train", tmp_path / "Dockerfile.train")
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    (tmp_path / "train.py").write_text(JOB)
    name = "ck-" + uuid.uuid4().hex[:8]
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        "command: [python, train.py]\n"
        "resources: {instance_types: [c5.large, m5.large], max_price: 0.1, volume_gb: 1}\n"
        "checkpoints: /checkpoints\n"
        "limits: {max_runtime: 15m, checkpoint_warn_after: 1m}\n"
        "retries: {on_interruption: 0, on_failure: 2}\n"
    )
    result = _cli(sandbox_env, "submit", str(spec), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (sub,) = json.loads(result.stdout)
    (run,) = sub["runs"]
    ckpt = f"submitter/runs/{run}/checkpoints/"

    _cut_off_sync(sandbox, run, ckpt + "generations/000002/")

    def warned() -> dict[str, Any] | None:
        st = _status(sandbox, run)
        assert st.get("state") not in ("succeeded", "failed", "cancelled"), st
        return st if st.get("attempt") == 3 and st.get("checkpoint_warning") else None

    st = sandbox.wait_for(warned, 400, f"{run}'s third attempt to warn about stale checkpoints", every=2)
    assert "no new checkpoint for 1 min (limits.checkpoint_warn_after is 1 min)" in st["checkpoint_warning"], st
    manifest1 = json.loads(_get(sandbox, ckpt + "manifests/000001.json") or b"{}")
    assert st["checkpoint_at"] == manifest1["written_at"], (st, manifest1)
    shown = _cli(sandbox_env, "status", run, "--json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)["runs"]
    assert row["checkpoint_warning"] == st["checkpoint_warning"] or "no new checkpoint" in row["checkpoint_warning"]
    assert isinstance(row["checkpoint_age_s"], int) and row["checkpoint_age_s"] >= 60, row
    table = _cli(sandbox_env, "status", run)
    assert table.returncode == 0 and f"{run}: no new checkpoint for" in table.stdout, table.stdout

    final = sandbox.wait_for(lambda: (s := _status(sandbox, run)).get("state") in ("succeeded", "failed") and s,
                             300, f"{run} to end", every=2)
    assert final["state"] == "succeeded" and final["attempt"] == 3 and final["failures"] == 2, final

    # The cut-off sync left part of generation 2 in S3 but never its manifest: manifest 1 stayed in force.
    keys = _keys(sandbox, ckpt)
    assert ckpt + "manifests/000002.json" not in keys, keys
    assert [f["path"] for f in manifest1["files"]] == ["state.txt"] and manifest1["attempt"] == 1
    assert (_get(sandbox, manifest1["files"][0]["key"]) or b"") == b"generation-1"
    log = _log(sandbox, run)
    assert "attempt 2 restored: generation-1" in log, log
    # not the torn generation 2, whose state.txt and first weights are in S3
    assert "attempt 3 restored: generation-1 files: ['state.txt']" in log, log
    assert ckpt + "generations/000002/state.txt" in keys, keys
    agent = (_get(sandbox, f"submitter/runs/{run}/logs/agent.log") or b"").decode()
    assert "checkpoint sync cut off, no manifest written" in agent and "manifest 1 stays in force" in agent, agent
    assert agent.count("checkpoints restored from manifest 1 (attempt 1") == 2, agent
    assert agent.count("no new checkpoint for") == 1, agent  # said once per attempt
    _finish(sandbox, sub["submission_id"])


def _finish(sandbox: Any, submission: str) -> None:
    """Remove the drained submission's resources (what `submit --wait` or `gc` does) and check nothing lives."""
    from submitter import connect
    from submitter.backends.pool import capacity

    aws = connect.aws(connect.resolve(sandbox.settings))
    capacity.remove(aws, submission)
    assert capacity.live_instances(aws, submission) == []
