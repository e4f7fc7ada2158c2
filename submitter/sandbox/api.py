"""What the CLI and the rest of submitter call to use the sandbox: up, down, status, env, logs, interrupt,
and `connection` (the endpoint, credentials and registry to use when `settings.sandbox` is true).

No printing here: progress goes through `say`, failures are SandboxError with the fix.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from submitter.aws.session import Endpoint
from submitter.errors import SandboxError
from submitter.sandbox import state as st
from submitter.settings import Settings

Say = Callable[[str], None]
BUCKET = "submitter-sandbox"
STATE_VERSION = 1


def _paths(settings: Settings) -> st.Paths:
    return st.Paths(settings.sandbox_dir)


def _daemon_marker(settings: Settings) -> str:
    from submitter.sandbox.daemon import MARKER

    return f"{MARKER} --home {settings.home}"


def _healthy(settings: Settings, state: dict[str, Any]) -> bool:
    from submitter.sandbox import registry

    paths = _paths(settings)
    if not st.process_alive(state.get("pid"), _daemon_marker(settings)):
        return False
    if not st.process_alive(state.get("registry_pid"), registry.marker(paths)):
        return False
    return _control(state, "GET", "/health", timeout=3)[0] == 200


def _control(state: dict[str, Any], method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float = 10) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{state['ports']['control']}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {}
    except (OSError, ValueError):
        return 0, {}


def _clients(state: dict[str, Any]) -> Callable[[str], Any]:
    import boto3

    session = boto3.Session(aws_access_key_id=state["access_key_id"],
                            aws_secret_access_key=state["secret_access_key"], region_name=state["region"])
    return lambda service: session.client(service, endpoint_url=state["endpoint_url"])


# ---------------------------------------------------------------------------------------------- up


def up(settings: Settings, say: Say) -> dict[str, Any]:
    """Start the sandbox, or return the running one's state (idempotent). Returns when it is ready."""
    from submitter.sandbox import images, prereqs

    paths = _paths(settings)
    current = st.read_json(paths.state)
    if current and current.get("ready") and _healthy(settings, current):
        return current
    if current:
        say("a previous sandbox is not healthy: cleaning it up first")
        down(settings, say)

    prereqs.check_root()
    engine = prereqs.engine()
    prereqs.check_tools(need_debootstrap=images.needs_debootstrap(engine, settings.home / "cache"))
    prereqs.check_loop_devices()
    ports = st.ports(settings.sandbox_port)
    prereqs.check_ports(ports)

    started = time.monotonic()
    image = images.ensure_host(engine, settings.home / "cache", say)
    paths.root.mkdir(parents=True, exist_ok=True)
    try:
        st.ensure_shared_work_root()
    except subprocess.CalledProcessError as exc:
        raise SandboxError("sandbox up", f"cannot make {st.WORK_ROOT} a shared mount: {exc.stderr!r}",
                           "run as root on a host (or a privileged container) that allows mounts") from exc

    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "ready": False,
        "home": str(settings.home),
        "label": st.home_hash(settings.home),
        "ports": ports,
        "endpoint_url": f"http://127.0.0.1:{ports['moto']}",
        "registry": f"127.0.0.1:{ports['registry']}",
        "region": settings.region,
        "bucket": BUCKET,
        "host_image": image,
        "started_at": datetime.now(timezone.utc).isoformat(),
    }
    try:
        say(f"starting the AWS API (moto) on {state['endpoint_url']}")
        daemon = _start_daemon(settings, paths, settings.sandbox_port, image)
        state["pid"] = daemon.pid
        st.write_json(paths.state, state)  # from here on `down` can clean up whatever happens next
        _wait_ready(state, daemon, paths)
        state.update(st.read_json(paths.admin_keys) or {})  # the administrator's keys: moto enforces IAM
        _seed(state)
        say(f"starting the registry on {state['registry']}")
        from submitter.sandbox import registry

        state["registry_pid"] = registry.start(paths, ports["registry"], state["registry_username"],
                                               state["registry_password"])
        state["ready"] = True
        state["up_seconds"] = round(time.monotonic() - started, 1)
        st.write_json(paths.state, state)
    except BaseException:
        st.write_json(paths.state, state)
        down(settings, lambda _text: None)
        raise
    return state


def _start_daemon(settings: Settings, paths: st.Paths, port_base: int, image: str) -> subprocess.Popen[bytes]:
    with paths.daemon_log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "submitter.sandbox.daemon", "--home", str(settings.home),
             "--region", settings.region, "--port-base", str(port_base), "--image", image],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True,  # outlives `sandbox up`; `down` stops it by pid
        )
    return proc


def _wait_ready(state: dict[str, Any], daemon: subprocess.Popen[bytes], paths: st.Paths,
                timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            tail = paths.daemon_log.read_text(errors="replace").strip().splitlines()[-5:]
            raise SandboxError("sandbox daemon", "it exited while starting: " + " | ".join(tail),
                               f"see {paths.daemon_log}")
        if _control(state, "GET", "/health", timeout=2)[0] == 200:
            return
        time.sleep(0.2)
    raise SandboxError("sandbox daemon", f"not ready within {timeout:.0f} s", f"see {paths.daemon_log}")


def _seed(state: dict[str, Any]) -> None:
    """Ask the API what it would hand out (account, registry password) and create the default bucket."""
    clients = _clients(state)
    state["account_id"] = clients("sts").get_caller_identity()["Account"]
    token = clients("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    username, password = base64.b64decode(token).decode().split(":", 1)
    state["registry_username"], state["registry_password"] = username, password
    s3 = clients("s3")
    if state["region"] == "us-east-1":
        s3.create_bucket(Bucket=state["bucket"])
    else:
        s3.create_bucket(Bucket=state["bucket"],
                         CreateBucketConfiguration={"LocationConstraint": state["region"]})
    s3.put_public_access_block(Bucket=state["bucket"], PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})


# ---------------------------------------------------------------------------------------------- down


def down(settings: Settings, say: Say) -> None:
    """Stop everything the sandbox started; works from the recorded state even if the daemon died."""
    from submitter.sandbox import registry
    from submitter.sandbox.runner import teardown_instance

    paths = _paths(settings)
    state = st.read_json(paths.state) or {}
    label = st.home_hash(settings.home)
    if state.get("pid"):
        say("stopping the sandbox daemon (it tears its instances down)")
    st.stop_process(state.get("pid"), _daemon_marker(settings), grace=90)
    st.stop_process(state.get("registry_pid"), registry.marker(paths), grace=10)

    engine = None
    try:
        import docker

        engine = docker.from_env(timeout=30)
        engine.ping()
    except Exception:
        say("docker engine not reachable: containers (if any) are left; loop devices and mounts are cleaned")
        engine = None
    if engine is not None:
        for container in engine.containers.list(all=True, filters={"label": f"{st.LABEL}={label}"}):
            container.remove(force=True, v=True)  # and its anonymous volumes (Batch jobs have one)
    for record_file in sorted(paths.instances.glob("*/instance.json")):
        record = st.read_json(record_file) or {}
        iid = record_file.parent.name
        if engine is not None:
            teardown_instance(engine, iid, record, paths)
        else:
            st.unmount_all(st.WORK_ROOT / iid)
            for loop in record.get("loops", []):
                st.loop_detach(loop["device"], Path(loop["file"]))
    for loop in st.loops_backed_by(paths.root):
        st.loop_detach(loop)
    shutil.rmtree(paths.root / "snapshots", ignore_errors=True)  # moto's snapshots end with the daemon
    _release_work_root(engine)
    if paths.state.exists():
        paths.state.unlink()


def _release_work_root(engine: Any) -> None:
    """Undo /mnt/submitter's self bind mount, unless another sandbox on this machine still uses it."""
    if [p for p in st.mounts_under(st.WORK_ROOT) if p != str(st.WORK_ROOT)]:
        return
    if engine is not None and engine.containers.list(all=True, filters={"label": st.LABEL}):
        return
    if _other_daemons():  # another sandbox is up, perhaps with no instance yet: it needs the shared mount
        return
    st.unmount_all(st.WORK_ROOT)


def _other_daemons() -> list[int]:
    """Pids of sandbox daemons still running on this machine (this one has stopped by now)."""
    from submitter.sandbox.daemon import MARKER

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if MARKER in cmdline:
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------------------------------------- queries


def _running_state(settings: Settings, where: str) -> dict[str, Any]:
    state = st.read_json(_paths(settings).state)
    if not state or not state.get("ready") or not st.process_alive(state.get("pid"), _daemon_marker(settings)):
        raise SandboxError(where, f"the sandbox is not running (SUBMITTER_HOME={settings.home})",
                           "submitter sandbox up")
    return state


def connection(settings: Settings) -> Endpoint:
    """The running sandbox's endpoint, credentials and names, for the session factory (SandboxError if down)."""
    state = _running_state(settings, "sandbox")
    return Endpoint(
        endpoint_url=state["endpoint_url"], region=state["region"], access_key_id=state["access_key_id"],
        secret_access_key=state["secret_access_key"], registry=state["registry"], bucket=state["bucket"],
    )


def env(settings: Settings) -> dict[str, str]:
    """The variables that point the aws CLI, boto3 and submitter at the sandbox."""
    c = connection(settings)
    return {
        "AWS_ENDPOINT_URL": c.endpoint_url,
        "AWS_REGION": c.region,
        "AWS_DEFAULT_REGION": c.region,
        "AWS_ACCESS_KEY_ID": c.access_key_id,
        "AWS_SECRET_ACCESS_KEY": c.secret_access_key,
        "SUBMITTER_REGISTRY": c.registry,
        "SUBMITTER_BUCKET": c.bucket,
        "SUBMITTER_SANDBOX": "1",
        "SUBMITTER_SPOT_ADVISOR_URL": f"http://127.0.0.1:{settings.sandbox_port + 2}/spot-advisor-data.json",
    }


def status(settings: Settings) -> dict[str, Any]:
    paths = _paths(settings)
    state = st.read_json(paths.state)
    if not state or not state.get("ready") or not _healthy(settings, state):
        return {"up": False, "home": str(settings.home), "instances": []}
    public = {k: v for k, v in state.items() if k not in ("secret_access_key", "registry_password")}
    instances = []
    ec2 = _clients(state)("ec2")
    for page in ec2.get_paginator("describe_instances").paginate():
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                iid = inst["InstanceId"]
                record = st.read_json(paths.instance(iid) / "instance.json") or {}
                running_host = "imds_port" in record and "ended_at" not in record
                instances.append({
                    "instance_id": iid,
                    "state": inst["State"]["Name"],
                    "instance_type": inst["InstanceType"],
                    "availability_zone": inst["Placement"]["AvailabilityZone"],
                    "launch_time": inst.get("LaunchTime"),
                    "host_container": record.get("container") if running_host else None,
                    "imds_endpoint": f"http://127.0.0.1:{record['imds_port']}/" if running_host else None,
                    "volumes": [{"device": v["as"], "loop": v["device"]} for v in record.get("loops", [])]
                    if running_host else [],
                    "boot_log": str(paths.instance(iid) / "log" / "cloud-init-output.log"),
                    "ssh": _ssh_public(record) if running_host else None,
                })
    return {**public, "up": True, "instances": instances}


def logs(settings: Settings, instance_id: str) -> str:
    """The instance's boot output (/var/log/cloud-init-output.log of its simulated host)."""
    path = _paths(settings).instance(instance_id) / "log" / "cloud-init-output.log"
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        raise SandboxError(
            f"sandbox logs {instance_id}", "no boot output for this instance (it never ran in this sandbox)",
            "list the sandbox's instances with `submitter sandbox status`",
        ) from None


def interrupt(settings: Settings, instance_id: str, notice_seconds: float) -> dict[str, Any]:
    """Give a spot interruption notice now; the instance is terminated `notice_seconds` later."""
    where = f"sandbox interrupt {instance_id}"
    if notice_seconds < 0:
        raise SandboxError(where, "the notice cannot be negative", "use --notice 120 (what AWS gives)")
    state = _running_state(settings, where)
    code, body = _control(state, "POST", "/interrupt",
                          {"instance_id": instance_id, "notice_seconds": notice_seconds})
    if code == 404:
        raise SandboxError(where, body.get("error", "no such running instance"),
                           "list running instances with `submitter sandbox status`")
    if code != 200:
        raise SandboxError(where, f"the sandbox daemon answered {code or 'nothing'}",
                           f"see {_paths(settings).daemon_log}")
    return body


def interrupt_rate(settings: Settings, instance_type: str, zone: str, per_hour: float,
                   notice_seconds: float) -> dict[str, Any]:
    """Interrupt every instance of the pool (type, AZ) 1/per_hour hours after it started (0: stop doing so)."""
    where = f"sandbox interrupt-rate {instance_type} {zone}"
    if per_hour < 0 or notice_seconds < 0:
        raise SandboxError(where, "the rate and the notice cannot be negative",
                           "give e.g. --per-hour 60 --notice 20 (--per-hour 0 stops it)")
    state = _running_state(settings, where)
    code, body = _control(state, "POST", "/interrupt-rate", {
        "instance_type": instance_type, "availability_zone": zone, "per_hour": per_hour,
        "notice_seconds": notice_seconds})
    if code != 200:
        raise SandboxError(where, f"the sandbox daemon answered {code or 'nothing'}: {body.get('error', '')}",
                           f"see {_paths(settings).daemon_log}")
    return body


def _ssh_public(record: dict[str, Any]) -> dict[str, Any] | None:
    ssh = record.get("ssh")
    return {k: ssh[k] for k in ("host", "port", "user")} if ssh else None


def ssh_endpoint(settings: Settings, instance_id: str) -> dict[str, Any] | None:
    """Where the instance's (emulated) port 22 listens: {host, port, user}; None without a key pair or host."""
    _running_state(settings, f"ssh {instance_id}")
    record = st.read_json(_paths(settings).instance(instance_id) / "instance.json") or {}
    if "ended_at" in record:
        return None
    return _ssh_public(record)
