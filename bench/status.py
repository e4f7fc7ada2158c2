"""`submitter status SUBMISSION --json` for 100 runs, end to end (a new CLI process: start-up, settings, S3),
against a naive client doing the same reads in the same run: one GetObject after another (boto3, in process,
so it pays no start-up at all), and `aws s3 cp` per status.json (what a shell script would do; timed on 10
runs and scaled to 100). Target: the CLI at most 2 s for 100 runs.

The 100 status.json documents (and the submission's run list) are written into the S3 of the same API server
the sandbox runs (moto in server mode), started by this benchmark on a free loopback port and stopped at the
end: `status` reads nothing else, so the instance runner and registry are not needed, and no one's running
sandbox is written into.
Run: `python -m bench status [--smoke]`.
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

RUNS = 100
TARGET_S = 2.0
PREFIX = "bench"


@contextmanager
def _api() -> Iterator[dict[str, str]]:
    """Environment for an AWS API with a bucket: a moto server of our own (never a running sandbox's S3)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Its own process, as in the sandbox (the daemon): a server sharing this process's GIL would slow both.
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
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
               "SUBMITTER_BUCKET": "bench-status", "via": "a moto server (the sandbox's API) of its own"}
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def _client(env: dict[str, str], service: str = "s3") -> Any:
    import boto3

    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _seed(env: dict[str, str]) -> tuple[str, list[str]]:
    s3 = _client(env)
    bucket = env["SUBMITTER_BUCKET"]
    with contextlib.suppress(Exception):  # the sandbox's bucket exists already
        s3.create_bucket(Bucket=bucket)
    sub = f"bench-20261126-070000-{uuid.uuid4().hex[:6]}"
    runs = [f"{sub}-{i}" for i in range(RUNS)]
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/submissions/{sub}/queued", Body=json.dumps({"runs": runs}).encode())
    for i, run in enumerate(runs):
        doc = {"run_id": run, "submission_id": sub, "job": "bench", "state": "running" if i % 3 else "succeeded",
               "instance_id": f"i-{i:017x}", "instance_type": "c5.large", "availability_zone": "us-east-1b",
               "price": 0.0316, "cost": 0.01 * i, "started_at": "2026-11-26T07:00:00Z",
               "heartbeat_at": "2026-11-26T07:30:00Z", "attempt": 1}
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}/runs/{run}/status.json", Body=json.dumps(doc).encode())
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


def run(smoke: bool = False) -> dict[str, object]:
    repeat = 1 if smoke else 5
    with _api() as env:
        via = env.pop("via")
        sub, runs = _seed(env)
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
        assert len(json.loads(out.stdout)["runs"]) == RUNS
        ours = ours[1:]  # the first warms the page cache

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
            "runs": RUNS,
            "submitter status --json, whole CLI process (s)": _median(ours),
            "naive GetObject loop, whole python process (s)": _median(naive_process),
            "naive GetObject loop in process, no start-up (s)": _median(naive),
        }
        aws = shutil.which("aws")
        if aws:
            sample = 2 if smoke else 10
            start = time.perf_counter()
            for run_id in runs[:sample]:
                subprocess.run([aws, "s3", "cp", f"s3://{bucket}/{PREFIX}/runs/{run_id}/status.json", "-"],
                               env=cli_env, capture_output=True, check=True)
            per_status = (time.perf_counter() - start) / sample
            figures["`aws s3 cp` per status.json, x100 (s)"] = round(per_status * RUNS, 1)
        figures["speed-up vs naive loop process"] = round(statistics.median(naive_process) / statistics.median(ours), 2)
        figures["target"] = f"<= {TARGET_S} s"
        figures["met"] = statistics.median(ours) <= TARGET_S
        figures["API"] = via
        shutil.rmtree(home, ignore_errors=True)
    summary = [{"figure": f"`status` for {RUNS} runs (whole CLI process)", "value": f"{statistics.median(ours):.2f} s",
                "target": f"<= {TARGET_S} s", "met": statistics.median(ours) <= TARGET_S}]
    return {"name": f"status: `submitter status SUBMISSION` for {RUNS} runs", "figures": figures, "repeat": repeat,
            "summary": summary}


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv), indent=2))
