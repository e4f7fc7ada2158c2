"""`python -m bench [--smoke] [--runs N] [NAME...]`: run the benchmarks and write bench/RESULTS.md.

Each benchmark module has `run(smoke) -> dict` returning its figures, each measured against its
baseline in the same run. `--smoke` runs one short repetition of each, so CI keeps them working, and writes
nothing. A benchmark that fails is reported and the others still run; the exit code is then 1.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# In this order: overhead (on paper) uses what resubmit and download measured in the same process.
BENCHMARKS = ["cli_start", "plan", "status", "staging", "image", "resubmit", "download", "recovery", "layers",
              "overhead"]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine() -> str:
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    engine = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({_cpu()}){memory}, "
            f"Python {platform.python_version()}, Docker Engine {engine}; load average at start {load}")


def _cell(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "**no**"
    if value is None:
        return "-"
    return str(value).replace("|", "\\|")


def _render(results: list[dict[str, Any]], failed: list[str], machine: str, seconds: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `python -m bench` ({seconds / 60:.0f} min) "
        f"on {machine}.",
        "",
        "Each figure is the median of the repetitions shown; every ratio is against a baseline measured in the "
        "same run, on the same machine, against the same local services (the sandbox: moto, a real registry, "
        "the real boot script and agent). Other work may have shared the machine (see the load average): "
        "absolute seconds are this machine's, the ratios are what to compare.",
        "",
        "| figure | value | target | met |",
        "| --- | --- | --- | --- |",
    ]
    for result in results:
        for row in result.get("summary", []):
            lines.append(f"| {_cell(row['figure'])} | {_cell(row['value'])} | {_cell(row['target'])} | "
                         f"{_cell(row['met'])} |")
    lines.append("")
    if failed:
        lines += [f"Failed in this run: {', '.join(failed)}.", ""]
    for result in results:
        title = result["name"]
        lines += [f"## {title}", ""]
        if result.get("paper"):
            lines += ["An estimate on paper from components measured in this run and published figures; "
                      "no AWS account was used.", ""]
        lines += ["| figure | value |", "| --- | --- |"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in result["figures"].items()]
        lines += ["", f"Repetitions: {result.get('repeat', 1)}. Source: `bench/{result['module']}.py`.", ""]
        if result.get("notes"):
            lines += ["Assumptions and method:", ""] + [f"- {note}" for note in result["notes"]] + [""]
    return "\n".join(lines)


def _summary(name: str) -> str:
    """The first sentence of a benchmark's docstring, read without importing it (imports start clients)."""
    doc = ast.get_docstring(ast.parse(Path(__file__).with_name(f"{name}.py").read_text())) or ""
    first = " ".join(doc.split()).split(". ")[0].split("; ")[0].rstrip(".")
    return first if len(first) <= 96 else first[:93] + "..."


def usage() -> str:
    lines = ["usage: python -m bench [--smoke] [NAME...]", "",
             "Run the benchmarks (all of them, in this order, when no NAME is given); a run of all of them writes",
             "bench/RESULTS.md. Each prints its figures as JSON on stdout and progress on stderr.", "",
             "options:", "  --smoke     one short repetition of each; writes nothing (what CI runs)",
             "  -h, --help  show this message and exit", "", "benchmarks:"]
    lines += [f"  {name:10}  {_summary(name)}" for name in BENCHMARKS]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(usage())
        return 0
    unknown = [a for a in argv if a.startswith("-") and a != "--smoke"]
    unknown += [a for a in argv if not a.startswith("-") and a not in BENCHMARKS]
    if unknown:
        print(f"bench: no such option or benchmark: {' '.join(unknown)}; see `python -m bench --help`",
              file=sys.stderr)
        return 2
    smoke = "--smoke" in argv
    runs = None  # --runs N: the number of runs of the benchmarks that take one (status, staging)
    if "--runs" in argv:
        at = argv.index("--runs")
        runs = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    names = [a for a in argv if not a.startswith("-")] or BENCHMARKS
    machine = _machine()
    began = time.perf_counter()
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    for name in names:
        start = time.perf_counter()
        print(f"== bench {name}{' (smoke)' if smoke else ''}", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            takes_runs = "runs" in inspect.signature(module.run).parameters
            result = module.run(smoke, runs=runs) if takes_runs and runs else module.run(smoke)
        except Exception:  # noqa: BLE001 - report it, run the others, exit 1 at the end
            traceback.print_exc()
            failed.append(name)
            continue
        result["module"] = name
        print(json.dumps(result, indent=2), flush=True)
        print(f"== bench {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        results.append(result)
    total = time.perf_counter() - began
    print(f"== {len(results)} benchmark(s) in {total:.0f} s; failed: {', '.join(failed) or 'none'}",
          file=sys.stderr)
    if not smoke and runs is None and names == BENCHMARKS:
        out = Path(__file__).with_name("RESULTS.md")
        out.write_text(_render(results, failed, machine, total))
        print(f"wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
