"""Dry-run plan of a 100-run sweep: `submitter submit SPEC --dry-run --json`, a whole CLI process, in seconds;
and the in-process `make_plan` alone.

Baseline, in the same run: the same command and the same `make_plan` for the same spec without its sweep (one
run). The ratio is what 99 more runs cost on top of everything a dry run does anyway (start-up, spec
validation, the image's content hash, rendering): close to 1x means planning a sweep is as quick as planning
one run, which is what a user iterating on a sweep wants. `submitter --help` is shown beside it as the floor
(the CLI's start-up alone). The issue sets no target beyond "seconds".

No credentials and no sandbox: prices are "unknown" and nothing is contacted, as for a first dry run on a
new machine. Run: `python -m bench plan [--smoke]`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
SPEC = """\
name: bench-plan
image: {{dockerfile: ../Dockerfile.train, context: ..}}
command: [python, train.py]
env: {{EPOCHS: "6"}}
resources: {{instance_types: [c5.large, m5.large], max_price: 0.1, volume_gb: 8}}
checkpoints: /checkpoints
limits: {{max_runtime: 1h, max_cost: 1.0}}
queue: {{max_workers: 10}}
{sweep}"""
SWEEP_100 = 'sweep:\n  LR: ["0.1", "0.05", "0.02", "0.01", "0.005", "0.002", "0.001", "0.0005", "0.0002", "0.0001"]\n' \
            '  SEED: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]\n'


def _project(work: Path) -> tuple[Path, Path]:
    (work / "jobs").mkdir(parents=True)
    for name in ("train.py", "Dockerfile.train", ".dockerignore"):
        shutil.copy(REPO / name, work / name)
    sweep, one = work / "jobs" / "sweep.yaml", work / "jobs" / "one.yaml"
    sweep.write_text(SPEC.format(sweep=SWEEP_100))
    one.write_text(SPEC.format(sweep=""))
    return sweep, one


def _env(work: Path) -> dict[str, str]:
    """No credentials, no sandbox, no stray config: the dry run must not reach for any network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SUBMITTER_"))}
    # HOME outside the project: a build context that is (or holds) the home directory is refused.
    env.update({"HOME": str(work.with_name(work.name + "-home")), "SUBMITTER_HOME": str(work / ".submitter"),
                "AWS_CONFIG_FILE": str(work / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-creds")})
    return env


def _cli_seconds(argv: list[str], env: dict[str, str], cwd: Path, repeat: int) -> tuple[float, str]:
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=True)  # warm the cache
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), out.stdout


def _make_plan_seconds(spec: Path, work: Path, repeat: int) -> float:
    from submitter import settings as settings_mod
    from submitter.plan import PriceLookup, make_plan
    from submitter.spec import load

    settings = settings_mod.load(_env(work), work)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        make_plan(load(spec), settings, PriceLookup(None, "bench: no prices"))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(smoke: bool = False) -> dict[str, object]:
    repeat = 3 if smoke else 15
    submitter = shutil.which("submitter") or sys.exit("submitter is not installed: pip install -e .")
    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    try:
        sweep, one = _project(work)
        env = _env(work)
        sweep_s, out = _cli_seconds([submitter, "submit", str(sweep), "--dry-run", "--json"], env, work, repeat)
        runs = len(json.loads(out)["runs"])
        assert runs == 100, runs
        one_s, _ = _cli_seconds([submitter, "submit", str(one), "--dry-run", "--json"], env, work, repeat)
        help_s, _ = _cli_seconds([submitter, "--help"], env, work, repeat)
        plan_sweep = _make_plan_seconds(sweep, work, repeat * 4)
        plan_one = _make_plan_seconds(one, work, repeat * 4)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "name": "Dry-run plan of a 100-run sweep: `submitter submit SPEC --dry-run --json`",
        "figures": {
            "100-run sweep, whole CLI process (s)": round(sweep_s, 3),
            "1 run (same spec, no sweep), whole CLI process (s)": round(one_s, 3),
            "ratio 100 runs / 1 run": round(sweep_s / one_s, 2),
            "`submitter --help`, start-up floor (s)": round(help_s, 3),
            "make_plan in process, 100 runs (ms)": round(plan_sweep * 1000, 1),
            "make_plan in process, 1 run (ms)": round(plan_one * 1000, 1),
            "target": "none set (seconds); 100 runs should cost about what 1 does",
        },
        "repeat": repeat,
        "summary": [{"figure": "Dry-run plan of a 100-run sweep (whole CLI process)",
                     "value": f"{sweep_s:.2f} s ({sweep_s / one_s:.2f}x a 1-run plan)", "target": "seconds (none set)",
                     "met": None}],
    }


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv), indent=2))
