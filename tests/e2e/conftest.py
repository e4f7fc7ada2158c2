"""End-to-end fixtures: one real sandbox per test session (moto, registry, instance runner, real docker).

Use the `sandbox` fixture (and its two companions) in any e2e test:

    @pytest.mark.e2e
    def test_something(sandbox, sandbox_env, sandbox_clients):
        sandbox["bucket"], sandbox["registry"]    # `sandbox` IS the state `sandbox up` returned (a dict)...
        ec2 = sandbox.client("ec2")               # ...plus: a boto3 client on the sandbox's AWS API
        sandbox.settings                          # Settings with sandbox=True, its own SUBMITTER_HOME and ports
        profile = sandbox.instance_profile()      # a fresh IAM role + instance profile name for launches
        sandbox.wait_state(iid, "terminated")     # poll EC2 until the instance reaches a state
        sandbox.wait_host(iid)                    # until its simulated host runs (returns its status entry)
        sandbox.wait_for(check, 30, "what")       # poll any condition, failing the test with "what"
        subprocess.run([... "submitter", "--sandbox", ...], env=sandbox_env)  # CLI finds this sandbox
        sandbox_clients("s3")                     # the same as sandbox.client("s3")

`sandbox_env` is os.environ plus SUBMITTER_HOME, SUBMITTER_SANDBOX_PORT and the `submitter sandbox env`
variables: a subprocess given it talks to this sandbox (a bare `load({}, cwd)` would look in ~/.submitter).
`private_sandbox` starts another sandbox just for one test (its own home and ports), e.g. to take it down.

The session gets a fresh SUBMITTER_HOME under pytest's tmp dir and a free port base (so parallel sessions do
not clash; set SUBMITTER_SANDBOX_PORT to force one), and `down` runs at the end. The debootstrapped rootfs
and the AWS CLI tree are cached in ~/.submitter/cache (linked into each test home), and the built images
stay in the engine, so only the first session on a machine pays for the image build.
Needs root, a running dockerd, loop devices, debootstrap and docker-registry (see docs/sandbox.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from submitter import settings as settings_mod
from submitter.sandbox import api
from submitter.sandbox import state as st
from submitter.settings import Settings

STABLE_CACHE = Path("~/.submitter/cache").expanduser()
REPO = Path(__file__).resolve().parents[2]


def _say(text: str) -> None:
    print(f"[sandbox] {text}", file=sys.stderr)


def free_port_base() -> int:
    """SUBMITTER_SANDBOX_PORT when set, else a free port base above 46000."""
    forced = os.environ.get("SUBMITTER_SANDBOX_PORT")
    return int(forced) if forced else st.free_port_base(46000, 60000)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail the test naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def make_settings(home: Path, port_base: int) -> Settings:
    """Settings for a sandbox in `home`, built as the CLI builds them (from an environment)."""
    environ = {"SUBMITTER_HOME": str(home), "SUBMITTER_SANDBOX_PORT": str(port_base), "SUBMITTER_SANDBOX": "1"}
    return settings_mod.load(environ, home)  # cwd=home: no stray .env is read


def prepare_home(home: Path) -> Path:
    """A fresh SUBMITTER_HOME whose image cache is the machine's stable one."""
    home.mkdir(parents=True, exist_ok=True)
    STABLE_CACHE.mkdir(parents=True, exist_ok=True)
    link = home / "cache"
    if not link.exists():
        link.symlink_to(STABLE_CACHE)
    return home


class Sandbox(dict[str, Any]):
    """A running sandbox as the tests see it: the state `up` returned, plus helpers."""

    def __init__(self, settings: Settings, state: dict[str, Any]) -> None:
        super().__init__(state)
        self.settings = settings
        self.state = state
        self.env = api.env(settings)
        self._clients: dict[str, Any] = {}

    wait_for = staticmethod(wait_for)

    def client(self, service: str) -> Any:
        """A boto3 client on the sandbox's AWS API (cached per service)."""
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(
                service, endpoint_url=self.state["endpoint_url"], region_name=self.state["region"],
                aws_access_key_id=self.state["access_key_id"], aws_secret_access_key=self.state["secret_access_key"],
            )
        return self._clients[service]

    def instance_profile(self, policy: dict[str, Any] | None = None) -> str:
        """Create a role (trusted by EC2) and an instance profile with unique names; returns the profile name.
        The sandbox enforces IAM: an instance with this profile may do what `policy` allows, nothing more."""
        iam = self.client("iam")
        name = f"e2e-{uuid.uuid4().hex[:10]}"
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
        if policy:
            iam.put_role_policy(RoleName=name, PolicyName="e2e", PolicyDocument=json.dumps(policy))
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        return name

    def instance_state(self, instance_id: str) -> str:
        out = self.client("ec2").describe_instances(InstanceIds=[instance_id])
        return str(out["Reservations"][0]["Instances"][0]["State"]["Name"])

    def wait_state(self, instance_id: str, wanted: str, timeout: float = 120) -> None:
        wait_for(lambda: self.instance_state(instance_id) == wanted, timeout, f"{instance_id} to be {wanted}")

    def instance_status(self, instance_id: str) -> dict[str, Any]:
        """This instance's entry in `sandbox status` (host container, IMDS endpoint, volumes)."""
        for inst in api.status(self.settings)["instances"]:
            if inst["instance_id"] == instance_id:
                return dict(inst)
        return {}

    def wait_host(self, instance_id: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until the instance's simulated host runs; returns its status entry."""
        return dict(wait_for(lambda: self.instance_status(instance_id).get("imds_endpoint")
                             and self.instance_status(instance_id), timeout, f"{instance_id}'s host to start"))


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A copy of the example project (train.py, Dockerfile.train, .dockerignore) with an empty jobs/ dir."""
    for name in ("train.py", "Dockerfile.train", ".dockerignore"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "jobs").mkdir()
    return tmp_path


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox for the whole test session: `up` once, `down` at the end."""
    home = prepare_home(tmp_path_factory.mktemp("submitter-home"))
    settings = make_settings(home, free_port_base())
    state = api.up(settings, _say)
    try:
        yield Sandbox(settings, state)
    finally:
        api.down(settings, _say)


@pytest.fixture(scope="session")
def sandbox_env(sandbox: Sandbox) -> dict[str, str]:
    """Environment for subprocesses (the CLI, aws, scripts) that should use the session's sandbox."""
    return {
        **os.environ,
        "SUBMITTER_HOME": str(sandbox.settings.home),
        "SUBMITTER_SANDBOX_PORT": str(sandbox.settings.sandbox_port),
        **sandbox.env,
    }


@pytest.fixture(scope="session")
def sandbox_clients(sandbox: Sandbox) -> Callable[[str], Any]:
    """A factory of boto3 clients on the session's sandbox: sandbox_clients("ec2")."""
    return sandbox.client


@pytest.fixture()
def private_sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A sandbox of its own for one test (fresh home, free ports); taken down afterwards if still up."""
    settings = make_settings(prepare_home(tmp_path / "home"), free_port_base())
    state = api.up(settings, _say)
    try:
        yield Sandbox(settings, state)
    finally:
        api.down(settings, _say)
