"""The warm image cache end to end in the sandbox (docs/image.md): `submitter cache SPEC` launches its builder (the
real boot script in cache mode), which pulls the image onto its data volume and stops; the CLI snapshots the volume
(the sandbox copies its loop-device file) and removes the builder; a `submit --wait` of the same spec maps the
snapshot in its launch template, and its worker boots on a volume restored from it (the marker is there, and the
AWS CLI's package the builder's boot kept, which the worker's boot installs from it); `gc` with
SUBMITTER_CACHE_MAX_AGE_DAYS=0 drops the snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from submitter import contract
from submitter.sandbox import api
from submitter.sandbox import snapshots as sandbox_snapshots

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 900


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def _template_snapshots(ec2: Any, job: str, seen: dict[str, str], stop: threading.Event) -> None:
    """While the submit runs: the data volume mapping of each launch template of `job` (cleaned up at its end)."""
    while not stop.is_set():
        for template in ec2.describe_launch_templates()["LaunchTemplates"]:
            name = template["LaunchTemplateName"]
            if name.startswith(f"submitter-{job}-") and name not in seen:
                data = ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"],
                                                             Versions=["$Latest"])["LaunchTemplateVersions"]
                mappings = data[0]["LaunchTemplateData"].get("BlockDeviceMappings", []) if data else []
                seen[name] = next((m["Ebs"].get("SnapshotId", "") for m in mappings if "Ebs" in m), "")
        stop.wait(1)


def test_a_cache_snapshot_is_made_then_a_submit_boots_from_it_and_gc_drops_it(
    sandbox: Any, sandbox_env: dict[str, str], project: Path
) -> None:
    job = "e2e-" + uuid.uuid4().hex[:8]
    spec = project / "jobs" / f"{job}.yaml"
    spec.write_text(f"name: {job}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n" + textwrap.dedent("""\
        command: [python, train.py]
        env: {EPOCHS: "1", SAMPLES: "100"}
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
        limits: {max_runtime: 10m}
    """))
    ec2, iam = sandbox.client("ec2"), sandbox.client("iam")

    made = _cli(sandbox_env, "cache", str(spec), "--json")
    assert made.returncode == 0, made.stdout + made.stderr
    done = json.loads(made.stdout)
    assert done["created"] is True
    snap_id = done["snapshot"]["snapshot_id"]
    (snap,) = ec2.describe_snapshots(SnapshotIds=[snap_id])["Snapshots"]
    tags = {t["Key"]: t["Value"] for t in snap.get("Tags", [])}
    digest = done["image"].rpartition("@")[2]
    assert snap["State"] == "completed" and snap["Encrypted"] is True
    assert tags[contract.TAG_CACHE_IMAGE] == digest and tags[contract.TAG_JOB] == job
    assert contract.parse_iso(tags[contract.TAG_CACHE_CREATED]) is not None
    assert tags[contract.TAG_BUCKET] == sandbox["bucket"]
    assert sandbox_snapshots.snapshot_file(api._paths(sandbox.settings), snap_id).is_file()
    # The builder, its volume, role and security group are gone.
    builder = next(r.split()[1] for r in done["removed"] if r.startswith("instance "))
    assert sandbox.instance_state(builder) == "terminated"
    builder_sub = tags[contract.TAG_SUBMISSION]
    assert not [r for r in iam.list_roles()["Roles"] if r["RoleName"] == f"submitter-{builder_sub}"]
    assert not ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"submitter-{builder_sub}"]}])["SecurityGroups"]
    # Its boot output shows the cache mode's steps, and that docker's storage stayed on the machine's engine.
    boot = api.logs(sandbox.settings, builder)
    assert "no systemd-run docker engine here" in boot and contract.CACHE_READY in boot, boot[-3000:]
    # ... and that it kept the AWS CLI's package (the host image lacks it; it has e2fsprogs) on the volume.
    assert "installed awscli-2 from their downloaded packages, kept for the warm cache" in boot, boot[-3000:]
    assert "the boot's packages kept on the volume: awscli-2.rpm" in boot, boot[-3000:]

    again = _cli(sandbox_env, "cache", str(spec), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    repeat = json.loads(again.stdout)
    assert repeat["created"] is False and repeat["snapshot"]["snapshot_id"] == snap_id

    listed = _cli(sandbox_env, "cache", "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [c["snapshot_id"] for c in json.loads(listed.stdout)] == [snap_id]

    seen: dict[str, str] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_template_snapshots, args=(sandbox.client("ec2"), job, seen, stop), daemon=True)
    watcher.start()
    try:
        result = _cli(sandbox_env, "submit", str(spec), "--wait", "--json")
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["submissions"][0]["image"] == done["image"]
    (run,) = out["runs"]
    assert run["state"] == "succeeded", run
    assert list(seen.values()) == [snap_id], seen  # the launch template mapped the cache
    worker_boot = api.logs(sandbox.settings, run["instance_id"])
    assert f"warm cache: the volume holds {done['image']}" in worker_boot, worker_boot[-3000:]
    assert "formatting" not in worker_boot  # a restored volume is mounted as it is, never re-formatted
    # The worker's boot installed the AWS CLI from the volume, every repository disabled.
    assert "installed awscli-2 from the warm cache's packages in " in worker_boot, worker_boot[-3000:]

    env0 = {**sandbox_env, "SUBMITTER_CACHE_MAX_AGE_DAYS": "0"}
    time.sleep(1)  # its age is above 0 days
    swept = _cli(env0, "gc", "--yes", "--json")
    assert swept.returncode == 0, swept.stdout + swept.stderr
    removed = [o for o in json.loads(swept.stdout)["removed"] if o["kind"] == "snapshot"]
    assert [o["id"] for o in removed] == [snap_id]
    assert not ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [snap_id]}])["Snapshots"]
    assert not sandbox_snapshots.snapshot_file(api._paths(sandbox.settings), snap_id).exists()
