"""Results download throughput: `submitter results RUN --dest DIR` against `aws s3 sync` of the same run's
outputs/ prefix, both whole CLI processes into empty directories, against the same private sandbox S3, in the
same run. Target: at least 1.0x the aws CLI's throughput.

The run's outputs are 200 files of random bytes (sizes 100 KB..900 KB, about 100 MB in all) written with
`aws s3 sync` (the agent's own upload command; its time is kept as the upload rate for the on-paper overhead).
Order alternates per repetition. Run: `python -m bench download [--smoke]`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import MEASURED  # noqa: E402
from bench.sandbox import private_sandbox  # noqa: E402

TARGET = 1.0
PREFIX = "submitter"


def _files(root: Path, count: int, mean_kb: int) -> int:
    rng = random.Random(9)
    total = 0
    for i in range(count):
        size = rng.randint(mean_kb // 5, mean_kb * 9 // 5) * 1024
        path = root / f"epoch-{i // 20:02d}" / f"part-{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        total += size
    return total


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}: {out.stderr[-2000:]}")
    return seconds


def _tree(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def run(smoke: bool = False) -> dict[str, object]:
    repeat = 1 if smoke else 5
    count, mean_kb = (20, 250) if smoke else (200, 500)
    submitter = shutil.which("submitter") or sys.exit("submitter is not installed: pip install -e .")
    aws = shutil.which("aws") or sys.exit("the aws CLI is the baseline: pip install awscli")
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    ours: list[float] = []
    theirs: list[float] = []
    try:
        source = work / "outputs"
        total = _files(source, count, mean_kb)
        with private_sandbox() as sb:
            bucket = sb.state["bucket"]
            aws_cmd = [aws, "--endpoint-url", sb.state["endpoint_url"]]
            run_id = "bench-20261126-070000-d0d0d0"
            prefix = f"s3://{bucket}/{PREFIX}/runs/{run_id}"
            upload_s = _timed([*aws_cmd, "s3", "sync", "--only-show-errors", str(source), f"{prefix}/outputs"],
                              sb.env)
            sb.client("s3").put_object(Bucket=bucket, Key=f"{PREFIX}/runs/{run_id}/status.json", Body=json.dumps(
                {"run_id": run_id, "submission_id": run_id, "job": "bench", "state": "succeeded"}).encode())
            for rep in range(repeat):
                mine, base = work / f"ours-{rep}", work / f"aws-{rep}"
                steps = [
                    (ours, [submitter, "--sandbox", "results", run_id, "--dest", str(mine)]),
                    (theirs, [*aws_cmd, "s3", "sync", "--only-show-errors", f"{prefix}/outputs/", str(base)]),
                ]
                for rows, argv in steps if rep % 2 == 0 else reversed(steps):
                    rows.append(_timed(argv, sb.env))
                if _tree(mine / run_id) != _tree(base) or _tree(base) != _tree(source):
                    raise RuntimeError("the two downloads differ from what was uploaded")
                shutil.rmtree(mine)
                shutil.rmtree(base)
                print(f"download: repetition {rep + 1}/{repeat}: submitter {ours[-1]:.2f} s, "
                      f"aws s3 sync {theirs[-1]:.2f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = total / 1e6
    ours_rate, aws_rate = mb / statistics.median(ours), mb / statistics.median(theirs)
    MEASURED["upload_mb_s"] = mb / upload_s
    MEASURED["download_mb_s"] = ours_rate
    return {
        "name": f"Results download throughput: `submitter results` vs `aws s3 sync` ({count} files, {mb:.0f} MB)",
        "figures": {
            "submitter results (s)": round(statistics.median(ours), 2),
            "aws s3 sync (s)": round(statistics.median(theirs), 2),
            "submitter results (MB/s)": round(ours_rate, 1),
            "aws s3 sync (MB/s)": round(aws_rate, 1),
            "ratio (throughput)": round(ours_rate / aws_rate, 2),
            "target": f">= {TARGET}x",
            "met": ours_rate / aws_rate >= TARGET,
            "upload with aws s3 sync, as the agent does (MB/s, 1 run)": round(mb / upload_s, 1),
        },
        "repeat": repeat,
        "summary": [{"figure": "Results download throughput, submitter / aws s3 sync",
                     "value": f"{ours_rate / aws_rate:.2f}x", "target": f">= {TARGET}x",
                     "met": ours_rate / aws_rate >= TARGET}],
    }


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv), indent=2))
