"""A hostile job in the sandbox (issue 14): its container leaves symbolic links to the host in its outputs and
checkpoints. The real boot script and agent (the CLI store: `aws s3 sync --no-follow-symlinks`) upload nothing
of the host, name each link in the run's agent log, and end the run in seconds, not after walking `/`."""

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

# Run on the job's container: each link points at something of the simulated host once the agent (root, on
# the host) reads the bind-mounted directory: /, /etc, the host's passwd and the agent's own artefact.
HOSTILE = """\
set -e
echo good > /outputs/result.txt
mkdir -p /outputs/nested && echo nested > /outputs/nested/kept.txt
ln -s / /outputs/root
ln -s /etc /outputs/nested/etc
ln -s /etc/passwd /outputs/passwd
ln -s /opt/submitter/runtime.pyz /outputs/agent.pyz
ln -s result.txt /outputs/inside
echo step > /checkpoints/step-1.pt
ln -s / /checkpoints/root
ln -s /etc/shadow /checkpoints/shadow
"""
LINKS = {"outputs": ["agent.pyz", "inside", "nested/etc", "passwd", "root"], "checkpoints": ["root", "shadow"]}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_links_to_the_host_in_outputs_and_checkpoints_are_skipped_named_and_cost_no_time(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path
) -> None:
    name = "e2e-hostile-" + uuid.uuid4().hex[:6]
    spec = project / "jobs" / f"{name}.yaml"
    spec.write_text(f"name: {name}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n" + textwrap.dedent(f"""\
        command: {json.dumps(HOSTILE)}
        resources: {{instance_types: [c5.large], max_price: 0.1, volume_gb: 1}}
        outputs: /outputs
        checkpoints: /checkpoints
    """))
    result = _cli(sandbox_env, "submit", str(spec), "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    assert run["state"] == contract.SUCCEEDED, run
    run_id = run["run_id"]

    # The run ended promptly: from start to its final status (uploads included) in seconds.
    started, ended = contract.parse_iso(run["started_at"]), contract.parse_iso(run["ended_at"])
    assert started and ended and (ended - started).total_seconds() < 60, run

    # Only the files the job wrote are in S3; nothing of the host, through any link.
    s3, layout = sandbox_clients("s3"), contract.Layout("submitter")
    for kind, wanted in (("outputs", {"result.txt": b"good\n", "nested/kept.txt": b"nested\n"}),
                         ("checkpoints", {"generations/000001/step-1.pt": b"step\n"})):
        prefix = layout.outputs(run_id) if kind == "outputs" else layout.checkpoints(run_id)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=sandbox["bucket"], Prefix=prefix)
        found = {o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])}
        manifest = {"manifests/000001.json"} if kind == "checkpoints" else set()  # runtime/checkpoints.py
        assert found == set(wanted) | manifest, (kind, sorted(found)[:20])
        for rel, body in wanted.items():
            assert s3.get_object(Bucket=sandbox["bucket"], Key=prefix + rel)["Body"].read() == body

    # Each link is named in the run's agent log, once. The log is uploaded just after the final status (its
    # last lines say how the run was settled), so it may land a moment after `--wait` returned.
    def agent_log() -> str:
        result = _cli(sandbox_env, "logs", run_id, "--agent")
        assert result.returncode == 0, result.stderr
        return result.stdout if "/checkpoints/shadow" in result.stdout else ""

    log = sandbox.wait_for(agent_log, 60, "the run's agent log")
    for kind, links in LINKS.items():
        for rel in links:
            line = f"/{kind}/{rel} (links are never followed"
            assert log.count(line) == 1, (line, log)


def test_the_cli_store_restores_only_inside_its_target_and_uploads_no_link(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent's store (the real `aws` CLI against the sandbox, as the administrator) on its own: forged keys
    below a checkpoints prefix are refused and the rest restored one by one; an upload skips every link."""
    import logging
    import os

    from submitter.runtime.store import CliStore

    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION"):
        if name in sandbox_env:
            monkeypatch.setenv(name, sandbox_env[name])
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3, bucket = sandbox_clients("s3"), sandbox["bucket"]
    prefix = f"submitter/runs/e2e-forged-{uuid.uuid4().hex[:6]}-20261130-120000-abcdef/checkpoints/"
    good = {"step-1.pt": b"one", "dir/step-2.pt": b"two"}
    forged = ["../../../../escaped-p1", "dir/../../../../../escaped-p1b", "/tmp/abs-p1-e2e", "a//b"]
    for rel, body in [*good.items(), *((rel, b"pwned") for rel in forged)]:
        s3.put_object(Bucket=bucket, Key=prefix + rel, Body=body)
    store = CliStore(sandbox["region"], bucket)
    dest = tmp_path / "work" / "checkpoints"
    with caplog.at_level(logging.WARNING, logger="submitter.runtime"):
        assert store.download(f"s3://{bucket}/{prefix}", dest, "dir") == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "work/checkpoints/dir/step-2.pt", "work/checkpoints/step-1.pt"]
    assert not Path("/tmp/abs-p1-e2e").exists()
    assert sum("refused the key" in r.getMessage() for r in caplog.records) == len(forged)

    os.symlink("/", dest / "root")
    os.symlink("/etc/passwd", dest / "dir" / "passwd")
    out_prefix = prefix.replace("/checkpoints/", "/outputs/")
    store.upload_tree(dest, out_prefix, {})
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=out_prefix)
    assert sorted(o["Key"][len(out_prefix):] for page in pages for o in page.get("Contents", [])) == sorted(good)
    assert [p.name for p in dest.parent.iterdir()] == ["checkpoints"]  # the snapshot is gone
