"""Issue 17 end to end: a spot pool the sandbox reclaims often gets a high observed interruption rate from the
workers' own instance reports, and the placement moves away from it.

The pool is (t3.medium, us-east-1b), the sandbox's cheapest for the spec's types (t3.medium, t3.large: no other
e2e test submits them, so the history this test leaves in the shared bucket moves no other test's placement).
`sandbox interrupt-rate` makes each of its instances get a notice 60 s after its host starts (40 s before the
reclaim, so the worker can stop the run and write its report).

Checked here: the interrupted worker's report carries `booted_at`; `placement.lookup.market_for` shows the pool's
observed rate (interruptions per instance-hour, and the hours), the sandbox's placement score and advisor band.
With the ranking merged (plan JSON `placement.dropped`, place-model's part), also: the dry-run plan drops the pool
or ranks it last, with its observed rate, and the next real submission's instance is not in it. Without it that
second half is skipped, saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
POOL = ("t3.medium", "us-east-1b")
RATE_PER_HOUR = 60  # each instance of the pool gets its notice 60 s after its host starts
NOTICE = "40"  # seconds: the worker needs them to stop the run, upload, and write its report


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _spec(project: Path, name: str, epochs: int, epoch_seconds: int) -> Path:
    for file in ("train.py", "Dockerfile.train", ".dockerignore"):
        shutil.copy(REPO / file, project / file)
    env = {"EPOCHS": str(epochs), "SAMPLES": "200", "SEED": "7", "LR": "0.1", "EPOCH_SECONDS": str(epoch_seconds)}
    spec = project / f"{name}-{epochs}.yaml"
    spec.write_text(
        f"name: {name}\n"
        "command: [python, train.py]\n"
        f"env: {json.dumps(env)}\n"
        "resources: {instance_types: [t3.medium, t3.large], max_price: 0.1, volume_gb: 1}\n"
        "limits: {max_runtime: 10m}\n"
        "retries: {on_interruption: 0}\n"
    )
    return spec


def _submit(env: dict[str, str], spec: Path) -> tuple[str, str]:
    result = _cli(env, "submit", str(spec), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (sub,) = json.loads(result.stdout)
    (run,) = sub["runs"]
    return sub["submission_id"], run


def _json(sandbox: Any, key: str) -> dict[str, Any]:
    body = sandbox.client("s3").get_object(Bucket=sandbox["bucket"], Key=key)["Body"]
    return dict(json.loads(body.read()))


def _reports(sandbox: Any, submission: str) -> list[dict[str, Any]]:
    prefix = f"submitter/submissions/{submission}/instances/"
    found = sandbox.client("s3").list_objects_v2(Bucket=sandbox["bucket"], Prefix=prefix).get("Contents", [])
    return [_json(sandbox, o["Key"]) for o in found]


def _end(sandbox: Any, run: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        status = _json(sandbox, f"submitter/runs/{run}/status.json")
        return status if status.get("state") in ("succeeded", "failed", "cancelled") else None

    return dict(sandbox.wait_for(ended, 600, f"{run} to end", every=2))


def _remove(sandbox: Any, submission: str) -> None:
    from submitter import connect
    from submitter.backends.pool import capacity

    aws = connect.aws(connect.resolve(sandbox.settings))
    capacity.remove(aws, submission)
    assert capacity.live_instances(aws, submission) == []


def test_a_pool_reclaimed_often_is_seen_and_avoided(sandbox: Any, sandbox_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    from submitter.placement.lookup import market_for

    name = "place-" + uuid.uuid4().hex[:6]
    rate = _cli(sandbox_env, "sandbox", "interrupt-rate", *POOL, "--per-hour", str(RATE_PER_HOUR), "--notice", NOTICE)
    assert rate.returncode == 0, rate.stderr
    submissions: list[str] = []
    try:
        # 1. A run long enough to be reclaimed in the pool; no retry, so it fails at the first reclaim.
        submission, run = _submit(sandbox_env, _spec(tmp_path, name, epochs=8, epoch_seconds=15))
        submissions.append(submission)
        final = _end(sandbox, run)
        assert final["state"] == "failed" and (final["instance_type"], final["availability_zone"]) == POOL, final
        assert final["interruptions"] == 1, final
        reclaimed = sandbox.wait_for(
            lambda: [r for r in _reports(sandbox, submission) if r.get("state") == "interrupted"], 180,
            "the interrupted worker's report")
        assert reclaimed[0].get("booted_at"), reclaimed[0]
        _remove(sandbox, submission)

        # 2. The market now shows the pool's own record next to the sandbox's score and band.
        started = time.monotonic()
        market = market_for(sandbox.settings, [POOL[0], "t3.large"], job=name)
        read_s = time.monotonic() - started
        facts = market.facts[POOL]
        assert facts.observed is not None and facts.observed.interruptions >= 1, market.notes
        # Each instance lives about 60-100 s: a few minutes of hours at most, so well over 2 per instance-hour
        # (AWS's worst band, >20% a month, is about 0.0003 per instance-hour).
        assert 0 < facts.observed.instance_hours < 0.25, facts.observed
        assert facts.observed.rate is not None and facts.observed.rate > 2, facts.observed
        assert facts.score == 10 and facts.band is not None and facts.band.label == "<5%", facts
        assert any("spot-advisor-data.json" in n and "127.0.0.1" in n for n in market.notes), market.notes

        # 3. The plan ranks the pool down (place-model's ranking, once merged).
        dry = _cli(sandbox_env, "submit", str(_spec(tmp_path, name, epochs=1, epoch_seconds=1)), "--dry-run",
                   "--json")
        assert dry.returncode == 0, dry.stderr
        placement = json.loads(dry.stdout)["placement"]
        if "dropped" not in placement:
            seen = f"{facts.observed}, rate {facts.observed.rate:.1f}/h, market read in {read_s:.1f} s"
            pytest.skip(f"the ranking (plan JSON placement.dropped, place-model) is not on this branch: the market "
                        f"shows the pool's observed rate (checked above: {seen}); the plan and the next submission "
                        "are not checked")
        every = placement["candidates"] + placement["dropped"]
        pools = {(p["instance_type"], p["availability_zone"]): p for p in every}
        shown = pools[POOL]
        assert shown["observed"]["interruptions"] >= 1 and shown["observed"]["rate"] > 2, shown
        kept = [(p["instance_type"], p["availability_zone"]) for p in placement["candidates"]]
        assert POOL not in kept or kept[-1] == POOL, placement

        # 4. The next real submission runs elsewhere (the pool is still reclaimed at the rate, so it would show).
        submission, run = _submit(sandbox_env, _spec(tmp_path, name, epochs=1, epoch_seconds=1))
        submissions.append(submission)
        final = _end(sandbox, run)
        assert final["state"] == "succeeded", final
        assert (final["instance_type"], final["availability_zone"]) != POOL, final
    finally:
        _cli(sandbox_env, "sandbox", "interrupt-rate", *POOL, "--per-hour", "0")
        for submission in submissions:
            _remove(sandbox, submission)
