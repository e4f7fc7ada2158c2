"""`python -m bench [--smoke] [NAME...]`: run the benchmarks and write bench/RESULTS.md.

Each benchmark module has `run(smoke) -> dict` returning its figures, each measured against its
baseline in the same run. `--smoke` runs one short repetition of each, so CI keeps them working.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

BENCHMARKS = ["cli_start", "status"]


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main(argv: list[str]) -> int:
    smoke = "--smoke" in argv
    names = [a for a in argv if not a.startswith("-")] or BENCHMARKS
    results = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        result = module.run(smoke)
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    if smoke:
        return 0
    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {_machine()}.",
        "Each figure is the median of repeated runs; ratios are against a baseline measured in the same run.",
        "",
    ]
    for result in results:
        lines += [f"## {result['name']}", "", "| figure | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in result["figures"].items()]
        lines += ["", f"repetitions: {result.get('repeat', 1)}", ""]
    out = Path(__file__).with_name("RESULTS.md")
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
