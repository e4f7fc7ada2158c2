"""CLI start-up: `submitter --help` against `aws --version`, timed in the same run (target: at most 0.5x)."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time

TARGET = 0.5


def _median_seconds(argv: list[str], repeat: int) -> float:
    subprocess.run(argv, capture_output=True, check=True)  # warm the page cache for both alike
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(smoke: bool = False) -> dict[str, object]:
    repeat = 3 if smoke else 15
    submitter = shutil.which("submitter") or sys.exit("submitter is not installed: pip install -e .")
    aws = shutil.which("aws") or sys.exit("the aws CLI is the baseline: pip install awscli")
    ours = _median_seconds([submitter, "--help"], repeat)
    baseline = _median_seconds([aws, "--version"], repeat)
    ratio = ours / baseline
    return {
        "name": "CLI start: `submitter --help` vs `aws --version`",
        "figures": {"submitter --help (s)": round(ours, 3), "aws --version (s)": round(baseline, 3),
                    "ratio": round(ratio, 2), "target": f"<= {TARGET}x", "met": ratio <= TARGET},
        "repeat": repeat,
        "summary": [{"figure": "CLI start: `submitter --help` / `aws --version`", "value": f"{ratio:.2f}x",
                     "target": f"<= {TARGET}x", "met": ratio <= TARGET}],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run("--smoke" in sys.argv), indent=2))
