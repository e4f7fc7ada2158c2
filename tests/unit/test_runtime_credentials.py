"""The container-credentials endpoint the agent serves for a job role: token required, bound to one address,
refreshed before expiry, in the format the AWS SDKs read natively (botocore's own provider is the client)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from submitter.runtime import credentials
from submitter.runtime.credentials import ADDRESS, PATH, CredentialServer
from submitter.runtime.docker import DockerProcess, docker_run_args
from submitter.runtime.store import iso_utc


class Role:
    """Stands in for STS: each call gives new keys valid for an hour from the clock's time."""

    def __init__(self) -> None:
        self.now = time.time()  # the SDK compares the expiry with the real clock
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def fetch(self) -> dict[str, str]:
        self.calls += 1
        expires = datetime.fromtimestamp(self.now + 3600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"AccessKeyId": f"ASIAJOB{self.calls:013d}", "SecretAccessKey": "secret", "Token": "session",
                "Expiration": expires}


@pytest.fixture()
def served():
    role = Role()
    server = CredentialServer(role.fetch, address="127.0.0.1", clock=role.clock).start()
    yield server, role
    server.stop()


def _get(url: str, token: str | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": token} if token is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_token_is_required(served) -> None:
    server, role = served
    assert _get(server.url, None)[0] == 401
    assert _get(server.url, "not-" + server.token)[0] == 403
    assert _get(server.url.replace(PATH, "/latest/meta-data/"), server.token)[0] == 404
    assert role.calls == 0  # nothing is assumed for a caller without the token
    code, doc = _get(server.url, server.token)
    assert code == 200 and sorted(doc) == ["AccessKeyId", "Expiration", "SecretAccessKey", "Token"]


def test_the_token_is_random_per_run() -> None:
    role = Role()
    one, two = (CredentialServer(role.fetch, address="127.0.0.1") for _ in range(2))
    try:
        assert one.token != two.token and len(one.token) >= 32
    finally:
        one.stop()
        two.stop()


def test_credentials_are_cached_and_refreshed_before_expiry(served) -> None:
    server, role = served
    first = _get(server.url, server.token)[1]
    assert _get(server.url, server.token)[1] == first and role.calls == 1
    role.now += 3600 - credentials.REFRESH_MARGIN_S - 60  # still well inside the hour
    assert _get(server.url, server.token)[1]["AccessKeyId"] == first["AccessKeyId"]
    role.now += 120  # now within the margin: new keys before the old ones expire
    second = _get(server.url, server.token)[1]
    assert second["AccessKeyId"] != first["AccessKeyId"] and role.calls == 2
    assert credentials.expiry(second) - role.now > credentials.REFRESH_MARGIN_S


def test_a_failed_fetch_answers_500_and_is_retried_next_time() -> None:
    role, broken = Role(), [True]

    def fetch() -> dict[str, str]:
        if broken[0]:
            raise OSError("sts: AccessDenied")
        return role.fetch()

    server = CredentialServer(fetch, address="127.0.0.1").start()
    try:
        assert _get(server.url, server.token)[0] == 500
        broken[0] = False
        assert _get(server.url, server.token)[0] == 200
    finally:
        server.stop()


def test_botocore_reads_the_endpoint_natively(served) -> None:
    from botocore.credentials import ContainerProvider

    server, _ = served
    provider = ContainerProvider(environ=server.env())
    creds = provider.load()
    assert creds is not None
    frozen = creds.get_frozen_credentials()
    assert frozen.access_key.startswith("ASIAJOB") and frozen.token == "session"


def test_it_binds_only_the_address_given_and_the_default_is_one_the_sdks_allow() -> None:
    from botocore.utils import ContainerMetadataFetcher

    role = Role()
    server = CredentialServer(role.fetch, address="127.0.0.1")
    try:
        assert server._server.server_address[0] == "127.0.0.1"  # never 0.0.0.0
        assert server.url.startswith("http://127.0.0.1:")
    finally:
        server.stop()
    assert ADDRESS == "169.254.170.2"
    ContainerMetadataFetcher()._validate_allowed_url(f"http://{ADDRESS}:41234{PATH}")  # raises when not allowed
    with pytest.raises(ValueError):
        ContainerMetadataFetcher()._validate_allowed_url(f"http://172.17.0.1:41234{PATH}")  # why not the gateway


def test_sts_expiration_becomes_utc_zulu() -> None:
    assert iso_utc("2026-11-30T13:00:00+00:00") == "2026-11-30T13:00:00Z"
    assert iso_utc("2026-11-30T14:00:00+01:00") == "2026-11-30T13:00:00Z"
    assert iso_utc("2026-11-30T13:00:00Z") == "2026-11-30T13:00:00Z"


def test_the_container_runs_on_the_bridge_never_the_host_network(tmp_path: Path) -> None:
    sub = {"image": "img", "command": ["true"], "outputs": "/outputs"}
    args = docker_run_args(sub, "r1", "i-1", tmp_path, tmp_path / "r1", {}, None, None)
    assert args[args.index("--network") + 1] == "bridge"
    assert "host" not in args


def test_no_job_role_no_endpoint_and_no_credentials_variables(tmp_path: Path) -> None:
    process = DockerProcess({"image": "img", "command": ["true"]}, "r1", "i-1", tmp_path, None, store=None)
    assert process.job_role_endpoint() == {}
    assert process.endpoint is None
