"""On paper: the AWS overhead of a 1-hour run (boot, pull, agent, upload, drain) as a share of its cost, from
components measured here and published EC2 figures. Target (issue 9): at most 5%.

Measured on this machine, in this run:
  - image pull rate: a fresh local registry (bench/image.py's), an image of the local base plus an incompressible
    random layer, pushed, removed from the engine, then `docker pull` timed; only the random layer travels, so
    the rate is transfer over loopback + gunzip + extraction per compressed MB;
  - agent start: in the sandbox, from `submitter submit` returning to the job container's start (group launch,
    host start, boot script, agent, `docker run`; the image is already on the engine), from bench/resubmit.py
    when it ran before this in the same process;
  - upload rate: `aws s3 sync` of the run's outputs, the agent's own command, to the sandbox's S3, from
    bench/download.py when it ran before this.
Everything else is an assumption, written out in the figures with its source.
Run: `python -m bench resubmit download overhead [--smoke]`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import MEASURED  # noqa: E402
from bench.image import PASSWORD, Registry, _base  # noqa: E402

TARGET = 0.05
RUN_S = 3600
# Published figures and assumptions (seconds, MB, MB/s): ONE model, shared with the plan's expected cost
# (submitter/placement/model.py says where each comes from).
from submitter.placement.model import AGENT_START_S as AGENT_START_DEFAULT_S  # noqa: E402
from submitter.placement.model import (  # noqa: E402
    BOOT_S,
    DRAIN_S,
    ECR_MB_S,
    INSTALL_S,
    MIN_BILLED_S,
    OUTPUTS_MB,
    S3_MB_S,
    SHUTDOWN_S,
)
from submitter.placement.model import IMAGE_MB as _MODEL_IMAGE_MB  # noqa: E402

IMAGES_MB = {  # compressed sizes
    "example image": None,  # measured: the local python:3.11-slim base's layers as the registry stores them
    "PyTorch CUDA image": _MODEL_IMAGE_MB["gpu"],  # assumed: the order of the pytorch/pytorch CUDA tags (3-4 GB)
}


def _pull_rate(blob_mb: int) -> tuple[float, float]:
    """(MB/s of `docker pull` for an incompressible layer, compressed MB of the base image's layers)."""
    from submitter.image import engine

    base = _base(engine())
    registry = Registry()
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    env = {**os.environ, "DOCKER_CONFIG": str(work / "docker"), "DOCKER_BUILDKIT": "0"}
    name = f"{registry.host}/pull-{uuid.uuid4().hex[:8]}:latest"
    try:
        subprocess.run(["docker", "login", "-u", "AWS", "--password-stdin", registry.host], input=PASSWORD,
                       text=True, env=env, check=True, capture_output=True)
        (work / "Dockerfile").write_text(
            f"FROM {base}\nRUN echo {uuid.uuid4().hex} > /nonce && head -c {blob_mb << 20} /dev/urandom > /blob\n")
        subprocess.run(["docker", "build", "-t", name, str(work)], env=env, check=True, capture_output=True)
        subprocess.run(["docker", "push", name], env=env, check=True, capture_output=True)
        manifest = _manifest(registry.host, name.split("/", 1)[1].split(":")[0])
        sizes = [int(layer["size"]) for layer in manifest["layers"]]
        subprocess.run(["docker", "rmi", name], env=env, check=True, capture_output=True)
        start = time.perf_counter()
        subprocess.run(["docker", "pull", name], env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        return sizes[-1] / 1e6 / seconds, sum(sizes[:-1]) / 1e6
    finally:
        subprocess.run(["docker", "rmi", "-f", name], capture_output=True)
        registry.close()
        shutil.rmtree(work, ignore_errors=True)


def _manifest(host: str, repo: str) -> dict[str, Any]:
    import base64

    request = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/latest", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json",
        "Authorization": "Basic " + base64.b64encode(f"AWS:{PASSWORD}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
        return dict(json.loads(answer.read()))


def run(smoke: bool = False) -> dict[str, object]:
    pull_mb_s, example_mb = _pull_rate(20 if smoke else 200)
    agent_s = MEASURED.get("agent_start_s", AGENT_START_DEFAULT_S)
    upload = OUTPUTS_MB / S3_MB_S
    figures: dict[str, object] = {
        "docker pull, local registry, incompressible layer (MB/s, measured)": round(pull_mb_s, 1),
        "agent start in the sandbox (s, measured)": round(agent_s, 1) if "agent_start_s" in MEASURED
        else f"{AGENT_START_DEFAULT_S} (assumed: bench/resubmit.py did not run first)",
        "aws s3 sync upload to the sandbox's S3 (MB/s, measured; not used)":
            round(MEASURED["upload_mb_s"], 1) if "upload_mb_s" in MEASURED else "not measured in this run",
        "boot, launch -> user-data (s, assumed)": BOOT_S,
        "boot install step: dnf install awscli-2 (s, assumed)": INSTALL_S,
        "ECR pull / S3 upload network rate (MB/s, assumed)": ECR_MB_S,
        f"upload of {OUTPUTS_MB} MB outputs + last checkpoint (s)": round(upload),
        "drain: 2 empty 20 s queue polls (s, runtime/pool.py)": DRAIN_S,
        "agent exit + terminate (s, assumed)": SHUTDOWN_S,
    }
    summary = []
    misses: list[str] = []
    met = True
    for label, size in IMAGES_MB.items():
        mb = example_mb if size is None else size
        pull = mb / ECR_MB_S + mb / pull_mb_s  # transfer at the network rate, then extraction at the local rate
        overhead = BOOT_S + INSTALL_S + pull + agent_s + upload + DRAIN_S + SHUTDOWN_S
        billed = max(MIN_BILLED_S, RUN_S + overhead)
        share = overhead / billed
        met = met and share <= TARGET
        figures[f"{label} ({mb:.0f} MB): pull (s)"] = round(pull)
        figures[f"{label}: overhead (s)"] = round(overhead)
        figures[f"{label}: share of a 1-hour run's cost"] = f"{share:.1%}"
        summary.append({"figure": f"On paper: AWS overhead of a 1-hour run, {label}", "value": f"{share:.1%}",
                        "target": f"<= {TARGET:.0%}", "met": share <= TARGET})
        if share > TARGET:
            budget = TARGET / (1 - TARGET) * RUN_S  # overhead seconds that keep the share at the target
            misses.append(f"{label}: {share:.1%} misses the target by {(share - TARGET) * 100:.1f} percentage "
                          f"points ({overhead - budget:.0f} s over a {budget:.0f} s budget); its pull alone is "
                          f"{pull:.0f} s of {overhead:.0f} s. An image cached on the AMI (or a smaller one), or a "
                          f"shorter drain, would bring it under; a 2-hour run halves the share.")
    figures["target"] = f"<= {TARGET:.0%}"
    figures["met"] = met
    notes = [
        "overhead = boot + install + pull + agent start + final upload + drain + exit; share = overhead / "
        "(3600 s + overhead): "
        "the instance and its EBS volume bill for the same seconds at the same rate, so the share is one of time.",
        f"billing: per second with a {MIN_BILLED_S} s minimum for Linux instances (Amazon EC2 pricing, per-second "
        "billing), from `running` until `shutting-down` (EC2 User Guide, instance lifecycle). The submit itself, "
        "the build and the push happen before launch and bill nothing.",
        f"boot: {BOOT_S} s from launch to user-data, the upper end of the 30-60 s usually published for Linux "
        "spot instances (Amazon Linux 2023, ECS-optimized AMI). AWS states no guaranteed figure.",
        f"install: {INSTALL_S} s for the boot's `dnf install -y awscli-2` (the ECS-optimized Amazon Linux 2023 AMI "
        "has no AWS CLI: docs/decisions.md, Instance AMI): repository metadata, which the AMI build's cleanup "
        "leaves uncached, plus awscli-2 and its python3 dependencies from the in-region repository. AWS publishes "
        "no figure; 30 s is the upper end of a reasoned 15-30 s. The boot caps the step at 3 tries of 100 s. In "
        "the sandbox the same step copies the cached CLI (about 3 s), which the measured agent start includes, "
        "so it is counted twice: conservative.",
        f"pull: compressed MB / {ECR_MB_S} MB/s (c5.large baseline network bandwidth 0.75 Gbps, EC2 instance type "
        "specifications; ECR serves layers from S3 in region) plus compressed MB / the measured local pull rate "
        "(gunzip + extraction on this machine, counted again on top: conservative). GPU types have far more "
        "network (g4dn.xlarge: up to 25 Gbps), so the transfer part is an upper bound there.",
        "agent start: measured in the sandbox, from `submitter submit` returning to the job container's start: "
        "group launch, simulated host start, boot script, agent, `docker run` (image already on the engine). "
        "It stands for the part after boot and pull on AWS.",
        f"upload: {OUTPUTS_MB} MB at {S3_MB_S} MB/s; the sandbox's S3 (moto, in-memory, one Python process) is no "
        "measure of S3's rate, so its figure is shown but not used. Periodic checkpoint syncs overlap training.",
        f"drain: after the last run the agent polls the empty queue {DRAIN_S // 20} x 20 s before leaving "
        "(submitter/runtime/pool.py EMPTY_RECEIVES_TO_EXIT, RECEIVE_WAIT); one worker per run is the worst case.",
        "the PyTorch CUDA image (the base of jobs/gpu-example.yaml, pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime) "
        "is taken as 3.5 GB compressed, the order of size of those CUDA runtime tags; it is not pulled here (no "
        "internet), so this size is an assumption, not a measurement.",
        *misses,
    ]
    return {"name": "On paper: AWS overhead of a 1-hour run as a share of its cost", "figures": figures,
            "repeat": 1, "paper": True, "notes": notes, "summary": summary}


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv), indent=2))
