"""Warm resubmit overhead in the sandbox: `submitter submit` of an unchanged job against the same steps done by
hand with the docker and aws CLIs, against the same (private) sandbox, in the same run. Target: at most 1.2x.

Two intervals per submission, both read from the same sources for both ways:
  (a) submit -> the job container starts: the engine's own `State.StartedAt` of the run's container;
  (b) submit -> results in S3 (status.json terminal, written after the outputs and log are uploaded),
      minus the job's own runtime (the container's `State.FinishedAt - State.StartedAt`).
"Warm": the image is already built and in the registry (a first, untimed submission of each way put it there).

By hand, per submission (each command a new process, as typed in a shell):
  docker build (cached) + docker push ("Layer already exists"); `aws s3 cp --recursive` of the submission's
  documents (submission.json, runtime.pyz, the run's spec.json and status.json, written beforehand from the
  previous submission's, as a person editing ids would); `aws sqs create-queue` + `aws sqs send-message`;
  `aws ec2 create-launch-template` with the same user-data and spot settings; `aws autoscaling
  create-auto-scaling-group`. The instance profile and the registry login are made once, untimed (a person
  does them once); submitter creates a scoped role, security group and dead-letter queue per submission and
  looks the image up in the registry, all inside its timing.
Both ways run the same boot script and agent on the sandbox's simulated host, so after launch they differ
only in what was launched. Order alternates per repetition. Run: `python -m bench resubmit [--smoke]`.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import MEASURED  # noqa: E402
from bench.sandbox import Sandbox, private_sandbox  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET = 1.2
TIMEOUT_S = 300
POLL_S = 0.2
PREFIX = "submitter"
SPEC = """\
name: {name}
image: {{dockerfile: ../Dockerfile.train, context: ..}}
command: [python, train.py]
env: {{EPOCHS: "2", SAMPLES: "300"}}
resources: {{instance_types: [c5.large], max_price: 0.1, volume_gb: 1}}
outputs: /outputs
limits: {{max_runtime: 10m}}
queue: {{max_workers: 1}}
"""


def _engine_time(text: str) -> float:
    """docker's RFC 3339 time with nanoseconds -> epoch seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


def _watch(sb: Sandbox, run_id: str, t0: float) -> dict[str, float]:
    """Poll the engine for the run's container and S3 for its status.json until the run has ended."""
    import docker

    engine = docker.from_env()
    s3 = sb.client("s3")
    bucket = sb.state["bucket"]
    started = finished = None
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if finished is None:
            for c in engine.containers.list(all=True, filters={"name": f"submitter-{run_id}"}):
                st = c.attrs["State"]
                if st.get("StartedAt", "").startswith("0001"):
                    continue
                started = _engine_time(st["StartedAt"])
                if st.get("Status") == "exited":
                    finished = _engine_time(st["FinishedAt"])
        try:
            doc = json.loads(s3.get_object(Bucket=bucket, Key=f"{PREFIX}/runs/{run_id}/status.json")["Body"].read())
        except Exception:  # noqa: BLE001 - not there yet
            doc = {}
        if doc.get("state") in ("succeeded", "failed", "cancelled"):
            at = time.time()
            if doc["state"] != "succeeded":
                raise RuntimeError(f"run {run_id} ended {doc['state']}: {doc.get('reason')}")
            if started is None or finished is None:
                raise RuntimeError(f"run {run_id}: the container was never seen on the engine")
            return {"start": started - t0, "results": at - t0 - (finished - started), "job": finished - started}
        time.sleep(POLL_S)
    raise RuntimeError(f"run {run_id} did not end within {TIMEOUT_S} s")


def _clear(sb: Sandbox) -> None:
    """Remove the groups and terminate the idle worker (its run is over; its agent would long-poll the empty queue
    for a while before leaving), and wait until its simulated host is gone: no teardown overlaps the next one."""
    import docker

    from submitter.sandbox.state import LABEL

    asg = sb.client("autoscaling")
    for group in asg.describe_auto_scaling_groups()["AutoScalingGroups"]:  # else the group replaces its worker
        asg.delete_auto_scaling_group(AutoScalingGroupName=group["AutoScalingGroupName"], ForceDelete=True)
    ec2 = sb.client("ec2")
    live = [i["InstanceId"] for r in ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": [
        "pending", "running", "stopping"]}])["Reservations"] for i in r["Instances"]]
    if live:
        ec2.terminate_instances(InstanceIds=live)
    engine = docker.from_env()
    deadline = time.monotonic() + TIMEOUT_S
    while engine.containers.list(all=True, filters={"label": f"{LABEL}={sb.state['label']}"}):
        if time.monotonic() > deadline:
            raise RuntimeError("the sandbox's hosts did not go away")
        time.sleep(0.5)


class Ours:
    def __init__(self, sb: Sandbox, spec: Path) -> None:
        self.sb, self.spec = sb, spec
        self.submitter = shutil.which("submitter") or sys.exit("submitter is not installed: pip install -e .")

    def submit(self) -> tuple[str, dict[str, Any]]:
        out = subprocess.run([self.submitter, "--sandbox", "submit", str(self.spec), "--json"], env=self.sb.env,
                             cwd=self.spec.parent.parent, capture_output=True, text=True, timeout=TIMEOUT_S)
        if out.returncode != 0:
            raise RuntimeError(f"submitter submit failed: {out.stderr[-2000:]}")
        (summary,) = json.loads(out.stdout)
        return summary["runs"][0], summary

    def once(self) -> dict[str, float]:
        t0 = time.time()
        run_id, summary = self.submit()
        returned = time.time() - t0
        if summary.get("built") or summary.get("pushed"):
            raise RuntimeError(f"not a warm resubmit: the image was built or pushed ({summary})")
        return {**_watch(self.sb, run_id, t0), "commands": returned}


class ByHand:
    """The docker and aws CLIs, one process per step, as a person (or a shell script) would run them."""

    def __init__(self, sb: Sandbox, project: Path, spec: Path, previous: str, work: Path) -> None:
        self.sb, self.project, self.spec, self.work = sb, project, spec, work
        self.aws = shutil.which("aws") or sys.exit("the aws CLI is the baseline: pip install awscli")
        self.env = {**sb.env, "DOCKER_CONFIG": str(work / "docker")}  # the login stays out of ~/.docker
        self.image = f"{sb.state['registry']}/hand:latest"
        self.bucket = sb.state["bucket"]
        s3 = sb.client("s3")

        def get(key: str) -> bytes:
            return bytes(s3.get_object(Bucket=self.bucket, Key=f"{PREFIX}/{key}")["Body"].read())

        # the documents of an earlier submission, to edit as a person would
        first_run = json.loads(get(f"submissions/{previous}/queued"))["runs"][0]
        self.previous = {"submission": json.loads(get(f"submissions/{previous}/submission.json")),
                         "runtime": get(f"submissions/{previous}/runtime.pyz"),
                         "spec": json.loads(get(f"runs/{first_run}/spec.json"))}
        # Once, untimed: registry login, an instance profile, the subnet to launch into.
        (work / "docker").mkdir(parents=True, exist_ok=True)
        subprocess.run(["docker", "login", "-u", sb.state["registry_username"], "--password-stdin",
                        sb.state["registry"]], input=sb.state["registry_password"], text=True, env=self.env,
                       check=True, capture_output=True)
        iam = sb.client("iam")
        self.profile = f"hand-{uuid.uuid4().hex[:8]}"
        iam.create_role(RoleName=self.profile, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                   "Action": "sts:AssumeRole"}]}))
        iam.create_instance_profile(InstanceProfileName=self.profile)
        iam.add_role_to_instance_profile(InstanceProfileName=self.profile, RoleName=self.profile)
        self.subnet = sb.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"]

    def _aws(self, *argv: str) -> str:
        # --endpoint-url: this aws CLI (v1) ignores AWS_ENDPOINT_URL for some services (sqs)
        return self._sh(self.aws, "--endpoint-url", self.sb.state["endpoint_url"], *argv)

    def _sh(self, *argv: str) -> str:
        out = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])}: {out.stderr[-2000:]}")
        return out.stdout

    def build_push(self) -> None:
        self._sh("docker", "build", "-f", str(self.project / "Dockerfile.train"), "-t", self.image, str(self.project))
        self._sh("docker", "push", self.image)

    def prepare(self) -> tuple[Any, Any, Path]:
        """Untimed: the files a person would have edited before typing the commands."""
        from submitter import settings as settings_mod
        from submitter.backends.pool import pool_plan
        from submitter.plan import PriceLookup, make_plan
        from submitter.spec import load

        settings = settings_mod.load({k: v for k, v in self.env.items() if k.startswith(("SUBMITTER_", "AWS_"))},
                                     self.project)
        account = self.sb.client("sts").get_caller_identity()["Account"]  # the policy's ARNs name it, as submit's do
        plan = make_plan(load(self.spec), settings, PriceLookup(None, "by hand"), account=account)
        pool = pool_plan(plan)
        run = plan.runs[0]
        root = self.work / plan.submission_id
        docs = root / "s3"
        sub_dir = docs / "submissions" / plan.submission_id
        run_dir = docs / "runs" / run.run_id
        sub_dir.mkdir(parents=True)
        run_dir.mkdir(parents=True)
        submission = {**self.previous["submission"], "submission_id": plan.submission_id,
                      "queue_name": pool.names.queue, "image": self.image, "secrets": {"names": [], "ssm_prefix": ""}}
        (sub_dir / "submission.json").write_text(json.dumps(submission))
        (sub_dir / "runtime.pyz").write_bytes(self.previous["runtime"])
        (sub_dir / "queued").write_text(json.dumps({"runs": [run.run_id]}))
        (run_dir / "spec.json").write_text(json.dumps({**self.previous["spec"], "run_id": run.run_id,
                                                       "submission_id": plan.submission_id, "image": self.image}))
        (run_dir / "status.json").write_text(json.dumps({"run_id": run.run_id, "submission_id": plan.submission_id,
                                                         "job": plan.job, "state": "queued", "attempt": 0}))
        template = {k: v for k, v in pool.launch_template.items() if k != "TagSpecifications"}
        template["IamInstanceProfile"] = {"Name": self.profile}
        # The sandbox enforces IAM: a person would give the role the same scoped policy the plan gives ours.
        self.sb.client("iam").put_role_policy(RoleName=self.profile, PolicyName="hand",
                                              PolicyDocument=json.dumps(pool.iam_policy))
        (root / "template.json").write_text(json.dumps(template))
        group = {k: v for k, v in pool.group.items() if k not in ("AvailabilityZones", "Tags")}
        group["VPCZoneIdentifier"] = self.subnet
        (root / "group.json").write_text(json.dumps(group))
        (root / "message.json").write_text(json.dumps({"run_id": run.run_id, "index": run.index, "env": run.env}))
        return pool, plan, root

    def once(self) -> dict[str, float]:
        pool, plan, root = self.prepare()
        t0 = time.time()
        self.build_push()
        self._aws("s3", "cp", "--recursive", "--only-show-errors", str(root / "s3"),
                 f"s3://{self.bucket}/{PREFIX}/")
        url = json.loads(self._aws("sqs", "create-queue", "--queue-name", pool.names.queue))["QueueUrl"]
        self._aws("sqs", "send-message", "--queue-url", url, "--message-body",
                 (root / "message.json").read_text())
        self._aws("ec2", "create-launch-template", "--launch-template-name", pool.names.launch_template,
                 "--launch-template-data", f"file://{root / 'template.json'}")
        self._aws("autoscaling", "create-auto-scaling-group", "--cli-input-json",
                 f"file://{root / 'group.json'}")
        returned = time.time() - t0
        return {**_watch(self.sb, plan.runs[0].run_id, t0), "commands": returned}


def _project(work: Path) -> tuple[Path, Path]:
    project = work / "project"
    (project / "jobs").mkdir(parents=True)
    for name in ("train.py", "Dockerfile.train", ".dockerignore"):
        shutil.copy(REPO / name, project / name)
    spec = project / "jobs" / "bench.yaml"
    spec.write_text(SPEC.format(name="bench-" + uuid.uuid4().hex[:6]))
    return project, spec


def _say(text: str) -> None:
    print(f"[resubmit] {text}", file=sys.stderr, flush=True)


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def run(smoke: bool = False) -> dict[str, object]:
    repeat = 1 if smoke else 5
    work = Path(tempfile.mkdtemp(prefix="bench-resubmit-"))
    ours: list[dict[str, float]] = []
    hand: list[dict[str, float]] = []
    try:
        with private_sandbox() as sb:
            project, spec = _project(work)
            mine = Ours(sb, spec)
            t = time.perf_counter()
            first, summary = mine.submit()  # cold: builds and pushes; not timed
            _say(f"cold submit {time.perf_counter() - t:.1f} s")
            _watch(sb, first, time.time())
            _say(f"cold run ended at {time.perf_counter() - t:.1f} s")
            _clear(sb)
            _say(f"worker gone at {time.perf_counter() - t:.1f} s")
            by_hand = ByHand(sb, project, spec, summary["submission_id"], work)
            by_hand.build_push()  # the hand image into the registry once; not timed
            for rep in range(repeat):
                steps: list[tuple[Ours | ByHand, list[dict[str, float]]]] = [(mine, ours), (by_hand, hand)]
                for way, rows in steps if rep % 2 == 0 else reversed(steps):
                    rows.append(way.once())
                    t = time.perf_counter()
                    _clear(sb)
                    _say(f"{type(way).__name__}: {rows[-1]}; worker gone after {time.perf_counter() - t:.1f} s")
                print(f"resubmit: repetition {rep + 1}/{repeat} done", file=sys.stderr, flush=True)
        subprocess.run(["docker", "rmi", "-f", by_hand.image], capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    start_ratio = _median(ours, "start") / _median(hand, "start")
    results_ratio = _median(ours, "results") / _median(hand, "results")
    # After submit returns: launch, host start, boot script, agent, container (image already local: no pull).
    MEASURED["agent_start_s"] = statistics.median(r["start"] - r["commands"] for r in ours)
    return {
        "name": "Warm resubmit overhead in the sandbox: `submitter submit` vs docker + aws CLIs by hand",
        "figures": {
            "(a) submit -> container started, submitter (s)": round(_median(ours, "start"), 2),
            "(a) submit -> container started, by hand (s)": round(_median(hand, "start"), 2),
            "(a) ratio": round(start_ratio, 2),
            "(b) submit -> results in S3 minus job runtime, submitter (s)": round(_median(ours, "results"), 2),
            "(b) submit -> results in S3 minus job runtime, by hand (s)": round(_median(hand, "results"), 2),
            "(b) ratio": round(results_ratio, 2),
            "of which the commands themselves, submitter (s)": round(_median(ours, "commands"), 2),
            "of which the commands themselves, by hand (s)": round(_median(hand, "commands"), 2),
            "job runtime (container), median (s)": round(_median(ours + hand, "job"), 2),
            "target": f"<= {TARGET}x",
            "met": start_ratio <= TARGET and results_ratio <= TARGET,
        },
        "repeat": repeat,
        "summary": [
            {"figure": "Warm resubmit (a): submit -> container started, submitter / by hand",
             "value": f"{start_ratio:.2f}x", "target": f"<= {TARGET}x", "met": start_ratio <= TARGET},
            {"figure": "Warm resubmit (b): submit -> results in S3 minus runtime, submitter / by hand",
             "value": f"{results_ratio:.2f}x", "target": f"<= {TARGET}x", "met": results_ratio <= TARGET},
        ],
    }


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv), indent=2))
