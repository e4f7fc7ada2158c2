"""`submitter status SUBMISSION --json` for 1,000 runs, end to end (a new CLI process: start-up, settings, S3),
against a naive client doing the same reads in the same run: one GetObject after another (boto3, in process,
so it pays no start-up at all), and `aws s3 cp` per status.json (what a shell script would do; timed on 10
runs and scaled). Target: the CLI at most 1 s for 1,000 runs (issue 20), whatever the number of runs.

The submission is what a 1,000-run sweep with 20 workers looks like midway: 20 runs running, 30 failed, 600
succeeded, the rest queued; each with its status.json and the run index entries its writers leave
(runtime/index.py: queued; starting; its end), written through the same functions. `status` reads the index
and the documents of the runs it cannot settle (the running ones) plus a fixed budget of others.
The documents are written into the S3 of the same API server the sandbox runs (moto in server mode), started
by this benchmark on a free loopback port and stopped at the end: `status` reads nothing else, so the
instance runner and registry are not needed, and no one's running sandbox is written into.
Run: `python -m bench status [--smoke] [--runs N]`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RUNS = 1000
SMOKE_RUNS = 100
TARGET_S = 1.0
PREFIX = "bench"


@contextmanager
def _api() -> Iterator[dict[str, str]]:
    """Environment for an AWS API with a bucket: a moto server of our own (never a running sandbox's S3)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Its own process, as in the sandbox (the daemon): a server sharing this process's GIL would slow both.
    # moto with the sandbox's speed patches (submitter/sandbox/speed.py), not its IAM enforcement or emulations.
    server = subprocess.Popen([sys.executable, "-m", "submitter.sandbox.speed", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "SUBMITTER_BUCKET": "bench-status", "via": "a moto server of its own with the sandbox's speed patches"}
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def _client(env: dict[str, str], service: str = "s3") -> Any:
    import boto3

    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _seed(env: dict[str, str], count: int) -> tuple[str, list[str]]:
    from concurrent.futures import ThreadPoolExecutor

    from submitter import contract
    from submitter.runtime import index

    s3 = _client(env)
    bucket = env["SUBMITTER_BUCKET"]
    with contextlib.suppress(Exception):  # the sandbox's bucket exists already
        s3.create_bucket(Bucket=bucket)
    sub = f"bench-20261126-070000-{uuid.uuid4().hex[:6]}"
    runs = [f"{sub}-{i}" for i in range(count)]
    layout = contract.Layout(PREFIX)
    s3.put_object(Bucket=bucket, Key=layout.queued(sub), Body=json.dumps({"runs": runs}).encode())

    def state(i: int) -> str:  # per 1,000: 20 running, 30 failed, 600 succeeded, 350 queued
        share = i * 1000 // count
        return (contract.RUNNING if share < 20 else contract.FAILED if share < 50 else
                contract.SUCCEEDED if share < 650 else contract.QUEUED)

    def one(i: int) -> None:
        run = runs[i]
        first = contract.Status(run, sub, "bench", contract.QUEUED, created_at="2026-11-26T07:00:00Z")
        history = [first]
        if state(i) != contract.QUEUED:
            history.append(first.evolve(contract.STARTING, attempt=1, instance_id=f"i-{i:017x}",
                                        instance_type="c5.large", availability_zone="us-east-1b", price=0.0316,
                                        started_at="2026-11-26T07:00:00Z", heartbeat_at="2026-11-26T07:30:00Z"))
        if state(i) in contract.TERMINAL:
            history.append(history[-1].evolve(state(i), exit_code=0 if state(i) == contract.SUCCEEDED else 1,
                                              ended_at="2026-11-26T07:40:00Z", cost=0.0001 * i,
                                              reason=None if state(i) == contract.SUCCEEDED else "exit code 1"))
        elif state(i) == contract.RUNNING:
            history.append(history[-1].evolve(contract.RUNNING, cost=0.0001 * i))
        for status in history:
            s3.put_object(Bucket=bucket, Key=layout.status(run), Body=json.dumps(status.to_json()).encode())
        writer = index.Indexer(layout, lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b""),
                               lambda key: s3.delete_object(Bucket=bucket, Key=key))
        for status in history:
            writer.write(status)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))
    return sub, runs


NAIVE_SCRIPT = """
import json, boto3
s3 = boto3.client("s3")
runs = json.loads(s3.get_object(Bucket="{bucket}", Key="{prefix}/submissions/{sub}/queued")["Body"].read())["runs"]
states = [json.loads(s3.get_object(Bucket="{bucket}", Key=f"{prefix}/runs/{{r}}/status.json")["Body"].read())
          for r in runs]
print(json.dumps(states))
"""


def _median(samples: list[float]) -> float:
    return round(statistics.median(samples), 3)


def run(smoke: bool = False, runs: int | None = None) -> dict[str, object]:
    count = runs or (SMOKE_RUNS if smoke else RUNS)
    repeat = 1 if smoke else 5
    with _api() as env:
        via = env.pop("via")
        sub, run_ids = _seed(env, count)
        home = tempfile.mkdtemp(prefix="bench-status-")
        cli_env = {**os.environ, **env, "SUBMITTER_PREFIX": PREFIX, "HOME": home}
        cli_env.setdefault("SUBMITTER_HOME", str(Path(home) / ".submitter"))
        cli_env.pop("SUBMITTER_SANDBOX", None)  # plain AWS mode through AWS_ENDPOINT_URL: no local state read
        argv = [sys.executable, "-m", "submitter", "status", sub, "--json"]
        ours = []
        for _ in range(repeat + 1):
            start = time.perf_counter()
            out = subprocess.run(argv, env=cli_env, capture_output=True, text=True, check=True)
            ours.append(time.perf_counter() - start)
        shown = json.loads(out.stdout)["runs"]
        assert [r["run_id"] for r in shown] == run_ids
        from_index = sum(1 for r in shown if r.get("source") == "index")
        ours = ours[1:]  # the first warms the page cache
        detail = []  # every status document, as `status` read them before the run index (issue 20)
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([*argv, "--detail"], env=cli_env, capture_output=True, text=True, check=True)
            detail.append(time.perf_counter() - start)

        s3 = _client(env)
        bucket = env["SUBMITTER_BUCKET"]
        naive = []
        for _ in range(repeat):
            start = time.perf_counter()
            runs_doc = json.loads(s3.get_object(Bucket=bucket, Key=f"{PREFIX}/submissions/{sub}/queued")["Body"].read())
            for run_id in runs_doc["runs"]:
                json.loads(s3.get_object(Bucket=bucket, Key=f"{PREFIX}/runs/{run_id}/status.json")["Body"].read())
            naive.append(time.perf_counter() - start)

        script = NAIVE_SCRIPT.format(bucket=bucket, prefix=PREFIX, sub=sub)
        naive_process = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", script], env=cli_env, capture_output=True, check=True)
            naive_process.append(time.perf_counter() - start)

        figures: dict[str, object] = {
            "runs": count,
            "submitter status --json, whole CLI process (s)": _median(ours),
            "rows from the run index / status documents read": f"{from_index} / {count - from_index}",
            "submitter status --json --detail (every document, as before), whole CLI process (s)": _median(detail),
            "naive GetObject loop, whole python process (s)": _median(naive_process),
            "naive GetObject loop in process, no start-up (s)": _median(naive),
        }
        aws = shutil.which("aws")
        if aws:
            sample = 2 if smoke else 10
            start = time.perf_counter()
            for run_id in run_ids[:sample]:
                subprocess.run([aws, "s3", "cp", f"s3://{bucket}/{PREFIX}/runs/{run_id}/status.json", "-"],
                               env=cli_env, capture_output=True, check=True)
            per_status = (time.perf_counter() - start) / sample
            figures[f"`aws s3 cp` per status.json, x{count} (s)"] = round(per_status * count, 1)
        figures["speed-up vs --detail"] = round(statistics.median(detail) / statistics.median(ours), 2)
        figures["speed-up vs naive loop process"] = round(statistics.median(naive_process) / statistics.median(ours), 2)
        figures["target"] = f"<= {TARGET_S} s"
        figures["met"] = statistics.median(ours) <= TARGET_S
        figures["API"] = via
        shutil.rmtree(home, ignore_errors=True)
    summary = [{"figure": f"`status` for {count} runs (whole CLI process)", "value": f"{statistics.median(ours):.2f} s",
                "target": f"<= {TARGET_S} s", "met": statistics.median(ours) <= TARGET_S}]
    return {"name": f"status: `submitter status SUBMISSION` for {count} runs", "figures": figures, "repeat": repeat,
            "summary": summary, "notes": [
                "a sweep midway with 20 workers (per 1,000 runs: 20 running, 30 failed, 600 succeeded, 350 queued), "
                "written through runtime/index.py as the writers do; `status` lists the run index once and reads "
                "the documents of the running runs plus a budget (status_index.DOCUMENT_READS).",
                "`--detail` reads every document, as `status` did before issue 20: the same-run baseline."]}


if __name__ == "__main__":
    count = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else None
    print(json.dumps(run("--smoke" in sys.argv, count), indent=2))
