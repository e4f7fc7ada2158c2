"""Issue 17 in the sandbox: the dry-run plan carries every pool's figures and the expected cost next to the worst
case, the group is built from the chosen pools only, and a submission lands in one of them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600
POOL_KEYS = {"instance_type", "availability_zone", "spot_price", "on_demand", "savings", "score", "band", "observed",
             "expected_cost"}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_the_plan_ranks_pools_and_the_group_uses_only_the_kept_ones(
    sandbox: Any, sandbox_env: dict[str, str], sandbox_clients: Any, project: Path
) -> None:
    name = "e2e-" + uuid.uuid4().hex[:8]
    spec = project / "jobs" / f"{name}.yaml"
    spec.write_text(f"name: {name}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n" + textwrap.dedent("""\
        command: [python, train.py]
        env: {EPOCHS: "1", SAMPLES: "200"}
        resources: {instance_types: [c5.large, m5.large], max_price: 0.1, volume_gb: 1}
        checkpoints: /checkpoints
        limits: {max_runtime: 10m}
    """))
    dry = _cli(sandbox_env, "submit", str(spec), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    plan = json.loads(dry.stdout)
    placement = plan["placement"]
    kept = placement["candidates"]
    assert kept, placement
    for pool in kept + placement["dropped"]:
        assert set(pool) >= POOL_KEYS
    assert all(0 < p["expected_cost"]["low"] <= p["expected_cost"]["high"] for p in kept)
    assert all(d["reason"] for d in placement["dropped"])
    expected = plan["estimate"]["expected"]
    assert 0 < expected["cost_low"] <= expected["cost_high"] and "total_at_most" in plan["estimate"]
    assert expected["inputs"]["runtime_hours"]["source"].startswith("limits.max_runtime")
    group = plan["launch"]["auto_scaling_group"]
    overrides = [o["InstanceType"] for o in group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]]
    assert overrides == placement["strategy"]["types"] == list(dict.fromkeys(p["instance_type"] for p in kept))
    assert group["AvailabilityZones"] == placement["strategy"]["zones"]

    human = _cli(sandbox_env, "submit", str(spec), "--dry-run")
    assert human.returncode == 0 and "expected: $" in human.stdout and "cost: at most $" in human.stdout

    result = _cli(sandbox_env, "submit", str(spec), "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    assert run["state"] == "succeeded", run
    # the sandbox's group launches in the cheapest pool its types x subnets reach: one of the kept zones and types
    assert run["instance_type"] in overrides and run["availability_zone"] in placement["strategy"]["zones"]
    name_ = f"submitter-{run['run_id'].rsplit('-', 1)[0]}"
    groups = sandbox_clients("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name_])
    assert groups["AutoScalingGroups"] == [], "submit --wait removes the group"
