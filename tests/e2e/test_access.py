"""Issue 8 end to end in the sandbox: `init --key-pair`, a submission launched with the key, `ssh RUN -- CMD`
through a real sshd whose port 22 only answers while the security group admits the caller, host keys from
the console output, and `notebook` forwarding a server that runs in the job container to localhost."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600


def _cli(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = TIMEOUT
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submitter", "--sandbox", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ssh_rules(ec2: Any, instance_id: str, settled: bool = True) -> list[str]:
    """Port-22 sources admitted to the instance by any of its groups (a session adds a group of its own).
    `settled`: no session is starting or ending, so no rule also means no session group left anywhere (while one
    starts, its group exists before it is attached: a poll for the rule passes settled=False)."""
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    groups = ec2.describe_security_groups(GroupIds=[g["GroupId"] for g in inst["SecurityGroups"]])["SecurityGroups"]
    rules = [r["CidrIp"] for g in groups for p in g.get("IpPermissions", []) if p.get("FromPort") == 22
             for r in p.get("IpRanges", [])]
    if settled and not rules:  # outside a session no session group is left behind either
        assert not [g for g in ec2.describe_security_groups()["SecurityGroups"]
                    if g["GroupName"].startswith("submitter-ssh-")]
    return rules


@pytest.fixture(scope="module")
def running(sandbox: Any, sandbox_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A key pair made by `init`, and a run launched with it that keeps running for a few minutes."""
    project = tmp_path_factory.mktemp("access")
    for name in ("train.py", "Dockerfile.train", ".dockerignore"):
        shutil.copy(REPO / name, project / name)
    key = "e2e-" + uuid.uuid4().hex[:8]
    made = _cli(sandbox_env, "init", "--yes", "--key-pair", key, cwd=project)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (sandbox.settings.home / "keys" / f"{key}.pem").stat().st_mode & 0o777 == 0o600
    again = _cli(sandbox_env, "init", "--yes", "--key-pair", key, cwd=project)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr

    (project / "jobs").mkdir()
    spec = project / "jobs" / f"{key}.yaml"
    spec.write_text(f"name: {key}\nimage: {{dockerfile: ../Dockerfile.train, context: ..}}\n" + textwrap.dedent("""\
        command: [python, train.py]
        env: {EPOCHS: "100", SAMPLES: "200", EPOCH_SECONDS: "5"}
        resources: {instance_types: [c5.large], max_price: 0.1, volume_gb: 1}
        limits: {max_runtime: 15m}
    """))
    result = _cli(sandbox_env, "submit", str(spec), "--json", "--ssh-key", key)
    assert result.returncode == 0, result.stdout + result.stderr
    (submitted,) = json.loads(result.stdout)
    (run_id,) = submitted["runs"]

    def state() -> dict[str, Any] | None:
        out = _cli(sandbox_env, "status", run_id, "--json")
        runs = json.loads(out.stdout)["runs"] if out.returncode == 0 else []
        return runs[0] if runs and runs[0].get("state") == "running" else None

    status = sandbox.wait_for(state, 300, f"{run_id} to be running", every=3)
    ec2 = sandbox.client("ec2")
    inst = ec2.describe_instances(InstanceIds=[status["instance_id"]])["Reservations"][0]["Instances"][0]
    group_id = next(g["GroupId"] for g in inst["SecurityGroups"] if g["GroupName"].startswith("submitter-"))
    try:
        yield {"run_id": run_id, "instance_id": status["instance_id"], "group_id": group_id, "key": key,
               "submission": submitted["submission_id"]}
    finally:
        from submitter import connect
        from submitter.backends.pool import capacity

        aws = connect.aws(connect.resolve(sandbox.settings))
        capacity.remove(aws, submitted["submission_id"])


def test_the_instance_has_the_key_and_port_22_answers_only_while_a_rule_admits_the_caller(
    sandbox: Any, running: dict[str, Any]
) -> None:
    import paramiko

    from submitter.sandbox import api

    ec2 = sandbox.client("ec2")
    inst = ec2.describe_instances(InstanceIds=[running["instance_id"]])["Reservations"][0]["Instances"][0]
    assert inst["KeyName"] == running["key"]
    assert _ssh_rules(ec2, running["instance_id"]) == [], "no inbound rule outside a session"
    endpoint = api.ssh_endpoint(sandbox.settings, running["instance_id"])
    assert endpoint and endpoint["host"] == "127.0.0.1"

    def banner() -> bool:
        try:
            transport = paramiko.Transport((endpoint["host"], endpoint["port"]))
            transport.start_client(timeout=5)
        except (paramiko.SSHException, EOFError, OSError):
            return False
        transport.close()
        return True

    assert not banner(), "port 22 must not answer without a security-group rule"
    ec2.authorize_security_group_ingress(GroupId=running["group_id"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.9.9.9/32"}]}])
    try:
        assert not banner(), "a rule for another address does not admit 127.0.0.1"
    finally:
        ec2.revoke_security_group_ingress(GroupId=running["group_id"], IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.9.9.9/32"}]}])
    # The host key is published where cloud-init publishes it on EC2.
    console = ec2.get_console_output(InstanceId=running["instance_id"])["Output"]
    assert "-----BEGIN SSH HOST KEY KEYS-----" in console and "ssh-ed25519 " in console


def test_ssh_runs_a_command_and_the_rule_exists_only_while_connected(
    sandbox: Any, sandbox_env: dict[str, str], running: dict[str, Any]
) -> None:
    ec2 = sandbox.client("ec2")
    assert _ssh_rules(ec2, running["instance_id"]) == []  # before
    result = _cli(sandbox_env, "ssh", running["run_id"], "--", "echo", "ok", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
    assert "matches the instance's console output" in result.stderr
    assert _ssh_rules(ec2, running["instance_id"]) == []  # after
    known = (sandbox.settings.home / "known_hosts").read_text()
    assert known.startswith(running["instance_id"] + " ssh-ed25519 ")

    # during: a longer command; the rule is there while it runs, for 127.0.0.1/32 only
    proc = subprocess.Popen([sys.executable, "-m", "submitter", "--sandbox", "ssh", running["run_id"], "--",
                             "sh", "-c", "sleep 6; docker ps --format '{{.Names}}'"],
                            cwd=REPO, env=sandbox_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sandbox.wait_for(lambda: _ssh_rules(ec2, running["instance_id"], settled=False) == ["127.0.0.1/32"], 60,
                         "the rule")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # SIGTERM first: the session closes its group (a SIGKILL would leave it to gc)
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 0, out + err
    assert f"submitter-{running['run_id']}" in out.split(), "the session runs on the instance, beside the job"
    assert _ssh_rules(ec2, running["instance_id"]) == []

    failing = _cli(sandbox_env, "ssh", running["run_id"], "--", "sh", "-c", "exit 7", timeout=120)
    assert failing.returncode == 7, failing.stderr
    assert _ssh_rules(ec2, running["instance_id"]) == []


def test_a_changed_host_key_is_refused(sandbox: Any, sandbox_env: dict[str, str], running: dict[str, Any]) -> None:
    known = sandbox.settings.home / "known_hosts"
    before = known.read_text() if known.exists() else ""
    known.write_text(f"{running['instance_id']} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBR6WGRY3q1is/+yynwUWcscmD7Ci71"
                     "a3d6/gJ6eruKg\n")
    try:
        result = _cli(sandbox_env, "ssh", running["run_id"], "--", "echo", "ok", timeout=120)
    finally:
        known.write_text(before)
    assert result.returncode == 1
    assert "NOT the key recorded" in result.stderr and result.stdout == ""
    assert _ssh_rules(sandbox.client("ec2"), running["instance_id"]) == [], "removed on error too"


def test_notebook_forwards_a_server_in_the_job_container_and_closes_on_ctrl_c(
    sandbox: Any, sandbox_env: dict[str, str], running: dict[str, Any]
) -> None:
    ec2 = sandbox.client("ec2")
    assert _ssh_rules(ec2, running["instance_id"]) == []
    proc = subprocess.Popen(
        [sys.executable, "-m", "submitter", "--sandbox", "notebook", running["run_id"], "--port", "8765",
         "--command", "python -m http.server 8765 --directory /app"],
        cwd=REPO, env=sandbox_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as in a terminal: a background job of a non-interactive shell (a CI script's `cmd &`)
        # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("open http://127.0.0.1:"), line + (proc.stderr.read() if proc.poll() is not None
                                                                  and proc.stderr else "")
        url = line.split()[1]
        with urllib.request.urlopen(url + "train.py", timeout=30) as response:
            assert response.status == 200
            assert b"def load_config" in response.read(), "the page comes from the job container's /app"
        assert _ssh_rules(ec2, running["instance_id"]) == ["127.0.0.1/32"]  # during
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "closed TCP 22" in err
    assert _ssh_rules(ec2, running["instance_id"]) == []  # after
    time.sleep(1)
    try:
        urllib.request.urlopen(url, timeout=5)
        pytest.fail("the local port is still forwarded after the session ended")
    except OSError:
        pass
