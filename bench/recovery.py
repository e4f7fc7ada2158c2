"""Recovery after a spot notice, measured in the sandbox: from the notice to (a) the run back on the queue and
(b) its training resumed on the replacement instance. Targets (issue 20): (a) <= 10 s; our share <= 15 s.

One checkpointing run (train.py, a checkpoint per epoch, `retries.on_interruption`), one worker. Once an epoch
is done, the sandbox gives its instance a spot notice (the IMDS `spot/instance-action`, as AWS does, here with
AWS's 120 s), and every step is timed from the sources that see it, all on this machine's clock:
  notice          the bench's clock as it asks the sandbox for the notice;
  detected        the agent's log line `run ...: stopping (spot interruption notice ...)` (its IMDS poll);
  checkpoint      the job's own line `SIGTERM received: checkpoint saved` (the engine's log timestamp);
  exited          the job container's FinishedAt (engine);
  concluded       the agent's log line `run ...: interrupted (...)`: logs, outputs and the final checkpoint
                  sync are uploaded; the status and the message's release follow at once;
  requeued        status.json says `interrupted` (the bench polls it every 0.2 s; the agent writes it just
                  before it makes the queue message visible again);
  launched        the replacement instance's LaunchTime (the group starts it once the old one is gone);
  agent           the replacement's agent's first log line (the host booted, the boot script ran);
  restored        its `checkpoints restored` line;
  resumed         the job's `resumed from epoch N` line on the replacement (engine timestamp).
Our share: notice -> requeued, plus agent -> resumed. The instance's: requeued -> launched -> agent (the group's
replacement and the host's boot; the sandbox's are a local container's, not EC2's: see the notes).
`--smoke`: one measurement (4 epochs) instead of 3 (6 epochs): measured 3.3 min with the sandbox's start and
stop at load average 7 (the 3 repetitions took 2.6 min at load 6). Run: `python -m bench recovery [--smoke]`.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import MEASURED  # noqa: E402
from bench.sandbox import Sandbox, private_sandbox  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET_REQUEUE_S = 10.0
TARGET_OURS_S = 15.0
NOTICE_S = 120  # what AWS gives (EC2 User Guide, Spot Instance interruption notices)
TIMEOUT_S = 420
POLL_S = 0.2
PREFIX = "submitter"
SPEC = """\
name: {name}
command: [python, train.py]
env: {{EPOCHS: "{epochs}", SAMPLES: "300", SEED: "7", EPOCH_SECONDS: "{epoch_s}"}}
resources: {{instance_types: [c5.large], max_price: 0.1, volume_gb: 1}}
checkpoints: /checkpoints
limits: {{max_runtime: 20m}}
retries: {{on_interruption: 2}}
queue: {{max_workers: 1}}
"""
AGENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) agent \w+ (.*)$")


def _engine_time(text: str) -> float:
    """docker's RFC 3339 time with nanoseconds -> epoch seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


def _agent_lines(sb: Sandbox, iid: str) -> list[tuple[float, str]]:
    """The agent's lines in the instance's boot log (its clock is this machine's; the host's zone is UTC)."""
    from submitter.sandbox import state

    path = state.Paths(sb.settings.sandbox_dir).instance(iid) / "log" / "cloud-init-output.log"
    lines = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        match = AGENT_LINE.match(line)
        if match:
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=timezone.utc)
            lines.append((at.timestamp(), match.group(2)))
    return lines


def _first(lines: list[tuple[float, str]], needle: str, what: str) -> float:
    for at, text in lines:
        if needle in text:
            return at
    raise RuntimeError(f"no agent line with {needle!r} ({what}); lines: {[t for _, t in lines][-15:]}")


def _job_line(logs: str, needle: str) -> float | None:
    for line in logs.splitlines():
        stamp, _, text = line.partition(" ")
        if needle in text:
            return _engine_time(stamp)
    return None


class Watch:
    """Polls the engine (job containers), S3 (status.json) and EC2 (instances) until the run resumed."""

    def __init__(self, sb: Sandbox, run_id: str) -> None:
        import docker

        self.sb, self.run_id = sb, run_id
        self.engine = docker.from_env()
        self.s3, self.ec2 = sb.client("s3"), sb.client("ec2")
        self.containers: dict[str, dict[str, Any]] = {}  # job container id -> {created, finished, logs}
        self.seen: dict[str, float] = {}

    def status(self) -> dict[str, Any]:
        try:
            body = self.s3.get_object(Bucket=self.sb.state["bucket"], Key=f"{PREFIX}/runs/{self.run_id}/status.json")
            return dict(json.loads(body["Body"].read()))
        except Exception:  # noqa: BLE001 - not there yet
            return {}

    def poll_containers(self) -> None:
        for c in self.engine.containers.list(all=True, filters={"name": f"submitter-{self.run_id}"}):
            try:
                c.reload()
                logs = c.logs(timestamps=True).decode(errors="replace")
            except Exception:  # noqa: BLE001 - removed meanwhile: keep what was read before
                continue
            st = c.attrs["State"]
            record = self.containers.setdefault(c.id, {"created": _engine_time(c.attrs["Created"])})
            record["logs"] = logs
            if st.get("Status") == "exited":
                record["finished"] = _engine_time(st["FinishedAt"])

    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.containers.values(), key=lambda r: r["created"])

    def until(self, what: str, done: Any) -> Any:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            self.poll_containers()
            value = done()
            if value:
                return value
            time.sleep(POLL_S)
        raise RuntimeError(f"run {self.run_id}: {what} not within {TIMEOUT_S} s; status {self.status()}")


def _submit(sb: Sandbox, project: Path, epochs: int, epoch_s: float) -> str:
    for name in ("train.py", "Dockerfile.train", ".dockerignore"):
        shutil.copy(REPO / name, project / name)
    spec = project / "recovery.yaml"
    spec.write_text(SPEC.format(name="rec-" + uuid.uuid4().hex[:8], epochs=epochs, epoch_s=epoch_s))
    out = subprocess.run([sys.executable, "-m", "submitter", "--sandbox", "submit", str(spec), "--json"],
                         env=sb.env, cwd=project, capture_output=True, text=True, timeout=TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"submitter submit failed: {out.stderr[-2000:]}")
    (summary,) = json.loads(out.stdout)
    return str(summary["runs"][0])


def once(sb: Sandbox, project: Path, epochs: int, epoch_s: float) -> dict[str, float]:
    from submitter.sandbox import api

    run_id = _submit(sb, project, epochs, epoch_s)
    w = Watch(sb, run_id)

    def in_epoch_2() -> str | None:
        st = w.status()
        jobs = w.ordered()
        if st.get("state") == "running" and jobs and "epoch 1/" in jobs[-1].get("logs", ""):
            return str(st["instance_id"])
        return None

    first = w.until("the first epoch", in_epoch_2)
    before = {i["InstanceId"] for r in w.ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    notice = time.time()
    api.interrupt(sb.settings, first, NOTICE_S)
    requeued = w.until("the requeue", lambda: time.time() if w.status().get("state") not in (
        "running", None) else None)
    state = w.status().get("state")
    if state != "interrupted":
        raise RuntimeError(f"run {run_id} is {state} after the notice, not interrupted: {w.status()}")

    def replacement() -> tuple[str, float] | None:
        for r in w.ec2.describe_instances()["Reservations"]:
            for i in r["Instances"]:
                if i["InstanceId"] not in before:  # an earlier repetition's hosts may still be there
                    return str(i["InstanceId"]), i["LaunchTime"].timestamp()
        return None

    def resumed() -> float | None:
        jobs = w.ordered()
        return _job_line(jobs[-1]["logs"], "resumed from epoch") if len(jobs) >= 2 else None

    resumed_at = w.until("the resumed step on the replacement", resumed)
    second, launched = w.until("the replacement instance", replacement)
    old_job = w.ordered()[0]
    a, b = _agent_lines(sb, first), _agent_lines(sb, second)
    marks = {
        "notice": notice,
        "detected": _first(a, "stopping (spot interruption notice", "the notice seen"),
        "checkpoint": _job_line(old_job["logs"], "checkpoint saved") or float("nan"),
        "exited": old_job.get("finished", float("nan")),
        "concluded": _first(a, f"run {run_id}: interrupted", "the attempt concluded"),
        "requeued": requeued,
        "launched": launched,
        "agent": b[0][0] if b else float("nan"),
        "restored": _first(b, "checkpoints restored", "the restore"),
        "resumed": resumed_at,
    }
    _finish(sb)
    if not marks["notice"] <= marks["detected"] <= marks["requeued"] + 1:  # the host's clock zone is not UTC?
        raise RuntimeError(f"the agent's log times do not fall between the notice and the requeue: {marks}")
    return {k: v - notice for k, v in marks.items()}


def _finish(sb: Sandbox) -> None:
    """Remove the group (else it replaces its worker) and terminate what lives; the sandbox goes down after."""
    asg = sb.client("autoscaling")
    for group in asg.describe_auto_scaling_groups()["AutoScalingGroups"]:
        asg.delete_auto_scaling_group(AutoScalingGroupName=group["AutoScalingGroupName"], ForceDelete=True)
    ec2 = sb.client("ec2")
    live = [i["InstanceId"] for r in ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": [
        "pending", "running"]}])["Reservations"] for i in r["Instances"]]
    if live:
        ec2.terminate_instances(InstanceIds=live)


def run(smoke: bool = False) -> dict[str, object]:
    repeat = 1 if smoke else 3
    samples: list[dict[str, float]] = []
    with private_sandbox() as sb:
        for _ in range(repeat):
            project = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
            try:
                samples.append(once(sb, project, epochs=4 if smoke else 6, epoch_s=3))
            finally:
                shutil.rmtree(project, ignore_errors=True)

    def med(f: Any) -> float:
        return round(statistics.median(f(s) for s in samples), 1)

    requeue = med(lambda s: s["requeued"])
    after_agent = med(lambda s: s["resumed"] - s["agent"])
    ours = med(lambda s: s["requeued"] + s["resumed"] - s["agent"])
    instance = med(lambda s: s["agent"] - s["requeued"])
    MEASURED["recovery_ours_s"] = ours
    figures: dict[str, object] = {
        "notice -> agent sees it (s)": med(lambda s: s["detected"]),
        "notice -> job's checkpoint saved after SIGTERM (s)": med(lambda s: s["checkpoint"]),
        "notice -> job container exited (s)": med(lambda s: s["exited"]),
        "notice -> uploads and final checkpoint sync done (s)": med(lambda s: s["concluded"]),
        "(a) notice -> run back on the queue (s)": requeue,
        "notice -> replacement launched (s, the sandbox's group)": med(lambda s: s["launched"]),
        "notice -> replacement's agent started (s)": med(lambda s: s["agent"]),
        "notice -> checkpoint restored on the replacement (s)": med(lambda s: s["restored"]),
        "(b) notice -> training resumed on the replacement (s)": med(lambda s: s["resumed"]),
        "our share: notice -> requeued + agent start -> resumed (s)": ours,
        "of which agent start -> resumed (receive, restore, container start) (s)": after_agent,
        "instance's share: requeued -> replacement's agent started (s, sandbox)": instance,
        "targets": f"(a) <= {TARGET_REQUEUE_S:.0f} s; our share <= {TARGET_OURS_S:.0f} s",
        "met": requeue <= TARGET_REQUEUE_S and ours <= TARGET_OURS_S,
    }
    notes = [
        f"a notice of {NOTICE_S} s, AWS's; the agent reads the notice from the instance metadata every second "
        "(NOTICE_EVERY, runtime/lifecycle.py; its other checks run every 5 s tick), so detection costs 0-1 s; it "
        "then stops the job (SIGTERM, the job saves its checkpoint and exits), uploads the log, metrics, outputs "
        "and the final checkpoint sync side by side, writes the status and makes the queue message visible "
        "again; the host then powers off. The replacement restores the checkpoint, the log and the metrics side "
        "by side too.",
        "requeued is seen by polling status.json every 0.2 s; the message's release is the agent's next call.",
        "the image is already on the sandbox's engine (one engine for every simulated host), so the replacement "
        "pulls nothing here; on AWS it pulls the image again (the 3.5 GB CUDA image: see the on-paper overhead, "
        "about 73 s without the warm cache) inside the instance's share.",
        "the instance's share in the sandbox is a local container's start and the group's replacement loop, not "
        "EC2's: on AWS, replacing a spot instance takes the group's health check plus a launch and a boot of "
        "30-60 s for Linux (see the on-paper overhead's boot and install figures), i.e. about 1.5-2 min, the "
        "order SkyPilot reports for its recovery (about 2.5 min from preemption to recovery).",
        "job: train.py, 300 samples, 3 s per epoch, a checkpoint per epoch; the notice is given in epoch 2.",
        "the replacement's agent start is its first log line, after it read the submission and the spot price; "
        "what precedes it (host start, the boot script, two AWS CLI calls) counts as the instance's share.",
    ]
    if ours > TARGET_OURS_S:
        notes.append(f"our share misses its target by {ours - TARGET_OURS_S:.1f} s. Detection is "
                     f"{figures['notice -> agent sees it (s)']} s of it. The rest is AWS CLI calls (status, "
                     "receive, the run index, restore), each a process start, slower on a loaded machine.")
    summary = [
        {"figure": "Recovery: spot notice -> run back on the queue (sandbox)", "value": f"{requeue} s",
         "target": f"<= {TARGET_REQUEUE_S:.0f} s", "met": requeue <= TARGET_REQUEUE_S},
        {"figure": "Recovery: our share of notice -> training resumed (sandbox)", "value": f"{ours} s",
         "target": f"<= {TARGET_OURS_S:.0f} s", "met": ours <= TARGET_OURS_S},
        {"figure": "Recovery: notice -> training resumed, all of it (sandbox launch, no pull)",
         "value": f"{med(lambda s: s['resumed'])} s", "target": None, "met": None},
    ]
    return {"name": "Recovery after a spot notice, in the sandbox", "figures": figures, "repeat": len(samples),
            "notes": notes, "summary": summary}


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv), indent=2))
