"""The image stage end to end: the real docker engine builds and pushes to a real registry (htpasswd auth
with the password ECR's GetAuthorizationToken decodes to) while moto serves the ECR API.

Uses the sandbox (`sandbox` fixture of tests/e2e/conftest.py) when there is one; otherwise starts its own
moto server and `docker-registry` on loopback ports. Names are unique per run, so this runs beside others.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from submitter.aws.ecr import TokenCache
from submitter.aws.session import Aws
from submitter.errors import ImageError
from submitter.image import BuildRequest, check_prebuilt, engine, ensure_image
from submitter.progress import NullProgress

pytestmark = pytest.mark.e2e

PASSWORD = "123456789012-auth-token"  # what moto's GetAuthorizationToken decodes to (user AWS)
BLOB_MB = 100
RUN = uuid.uuid4().hex[:8]  # in every name this module creates, so its images can be removed after


@dataclass
class Env:
    endpoint_url: str
    registry: str
    access_key_id: str = "testing"  # the sandbox enforces IAM: there, its administrator's keys
    secret_access_key: str = "testing"

    def aws(self) -> Aws:
        session = boto3.Session(aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                                region_name="us-east-1")
        return Aws(session, "us-east-1", self.endpoint_url, self.registry)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, seconds: float = 20) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310
            return
        except urllib.error.HTTPError:
            return  # answering (401 is fine)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


@pytest.fixture(scope="module")
def registry_factory() -> Iterator[Any]:
    """Starts `docker-registry` processes on loopback with htpasswd user AWS; stops them at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    dirs: list[str] = []

    def start(password: str | None = PASSWORD) -> str:
        root = tempfile.mkdtemp(prefix="submitter-registry-")
        dirs.append(root)
        port = _free_port()
        auth = ""
        if password is not None:
            htpasswd = subprocess.run(
                ["htpasswd", "-Bbn", "AWS", password], check=True, capture_output=True, text=True
            ).stdout
            Path(root, "htpasswd").write_text(htpasswd)
            auth = f"auth: {{htpasswd: {{realm: submitter, path: {root}/htpasswd}}}}\n"
        Path(root, "config.yml").write_text(
            f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {root}/data}}}}\n"
            f"http: {{addr: '127.0.0.1:{port}'}}\n" + auth
        )
        procs.append(
            subprocess.Popen(
                ["docker-registry", "serve", f"{root}/config.yml"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_http(f"http://127.0.0.1:{port}/v2/")
        return f"127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
    for root in dirs:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest, registry_factory: Any) -> Env:
    try:
        sandbox = request.getfixturevalue("sandbox")
    except pytest.FixtureLookupError:
        return Env(request.getfixturevalue("moto_endpoint"), registry_factory())
    # The session's sandbox lives in its own SUBMITTER_HOME: ask it, not a default-home Settings.
    return Env(sandbox["endpoint_url"], sandbox["registry"], sandbox["access_key_id"], sandbox["secret_access_key"])


@pytest.fixture(scope="module")
def docker_api() -> Any:
    return engine()


@pytest.fixture(scope="module")
def base_image(docker_api: Any) -> Iterator[str]:
    """A Debian + python3 base made on this machine, plus a 100 MB layer of random bytes (unique per run)."""
    from docker.errors import ImageNotFound

    base = None
    for candidate in ("python:3.11-slim", "submitter-test/base:bookworm"):
        try:
            docker_api.inspect_image(candidate)
            base = candidate
            break
        except ImageNotFound:
            continue
    if base is None:
        rootfs = tempfile.mkdtemp(prefix="submitter-rootfs-")
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,ca-certificates", "bookworm", rootfs],
            check=True,
            capture_output=True,
        )
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", "submitter-test/base:bookworm"], stdin=tar.stdout, check=True)
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        base = "submitter-test/base:bookworm"
    tag = f"submitter-test/base-blob:{RUN}"
    context = Path(tempfile.mkdtemp(prefix="submitter-base-"))
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN head -c {BLOB_MB * 1024 * 1024} /dev/urandom > /opt/blob\n")
    for _ in docker_api.build(path=str(context), tag=tag, rm=True, decode=True):
        pass
    shutil.rmtree(context, ignore_errors=True)
    yield tag
    for image in docker_api.images():
        for ref in image.get("RepoTags") or []:
            if f"/{RUN}-" in ref or ref == tag:
                docker_api.remove_image(ref, force=True)


def _project(tmp_path: Path, base: str, script: str) -> BuildRequest:
    (tmp_path / "Dockerfile.train").write_text(
        f'FROM {base}\nWORKDIR /app\nCOPY train.py /app/train.py\nCMD ["python3", "/app/train.py"]\n'
    )
    (tmp_path / "train.py").write_text(script)
    return BuildRequest(
        job="img-e2e",
        dockerfile=tmp_path / "Dockerfile.train",
        context=tmp_path,
        repository=f"e2e/{RUN}-{uuid.uuid4().hex[:8]}",
    )


def _registry_get(registry: str, path: str) -> tuple[dict[str, str], Any]:
    token = base64.b64encode(f"AWS:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://{registry}{path}",
        headers={
            "Authorization": f"Basic {token}",
            "Accept": "application/vnd.docker.distribution.manifest.v2+json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return dict(response.headers.items()), json.loads(response.read())


def _image_ids(docker_api: Any) -> set[str]:
    return {image["Id"] for image in docker_api.images(all=True)}


def test_build_push_skip_and_one_line_change(env: Env, docker_api: Any, base_image: str, tmp_path: Path) -> None:
    nonce = uuid.uuid4().hex
    build = _project(tmp_path, base_image, f"# run {nonce}\nprint('epoch 1')\n")
    aws, cache = env.aws(), TokenCache()

    # 1. cold: built and pushed
    first = ensure_image(aws, docker_api, build, NullProgress(), cache=cache)
    assert first.built and first.pushed and first.layers_pushed > 0
    assert first.image_bytes >= BLOB_MB * 1_000_000
    headers, manifest1 = _registry_get(env.registry, f"/v2/{build.repository}/manifests/{first.tag}")
    assert headers["Docker-Content-Digest"] == first.digest
    assert first.uri_with_digest == f"{env.registry}/{build.repository}@{first.digest}"
    labels = docker_api.inspect_image(first.image_id)["Config"]["Labels"]
    assert labels["submitter.job"] == "img-e2e" and labels["submitter.tag"] == first.tag

    # 2. unchanged: neither build nor push, seen from the engine (no new image) and the registry (same tags)
    ids_before = _image_ids(docker_api)
    _, tags_before = _registry_get(env.registry, f"/v2/{build.repository}/tags/list")
    second = ensure_image(aws, docker_api, build, NullProgress(), cache=cache)
    assert (second.built, second.pushed, second.bytes_pushed, second.layers_pushed) == (False, False, 0, 0)
    assert second.digest == first.digest and second.uri_with_digest == first.uri_with_digest
    assert _image_ids(docker_api) == ids_before
    assert _registry_get(env.registry, f"/v2/{build.repository}/tags/list")[1] == tags_before

    # 3. one-line change to the training script: only the code layer is rebuilt and pushed
    (tmp_path / "train.py").write_text(f"# run {nonce}\nprint('epoch 2')\n")
    third = ensure_image(aws, docker_api, build, NullProgress(), cache=cache)
    assert third.built and third.pushed and third.tag != first.tag
    assert third.layers_pushed == 1
    assert third.bytes_pushed <= third.image_bytes / 100, (third.bytes_pushed, third.image_bytes)
    _, manifest3 = _registry_get(env.registry, f"/v2/{build.repository}/manifests/{third.digest}")
    old = [layer["digest"] for layer in manifest1["layers"]]
    new = [layer["digest"] for layer in manifest3["layers"]]
    assert len(old) == len(new) and old[:-1] == new[:-1] and old[-1] != new[-1]
    diff_ids_1 = docker_api.inspect_image(first.image_id)["RootFS"]["Layers"]
    diff_ids_3 = docker_api.inspect_image(third.image_id)["RootFS"]["Layers"]
    assert diff_ids_1[:-1] == diff_ids_3[:-1] and diff_ids_1[-1] != diff_ids_3[-1]

    # instances pull by digest: the reference resolves in the registry
    auth = {"username": "AWS", "password": PASSWORD, "serveraddress": env.registry}
    docker_api.pull(f"{env.registry}/{build.repository}", tag=third.digest, auth_config=auth)

    # a prebuilt image.uri is checked, not built
    found = check_prebuilt(aws, docker_api, f"{env.registry}/{build.repository}:{third.tag}", NullProgress())
    assert found.digest == third.digest and not found.built and not found.pushed
    with pytest.raises(ImageError, match="no such image"):
        check_prebuilt(aws, docker_api, f"{env.registry}/{build.repository}:c-missing", NullProgress())


def test_failing_step_shows_the_step_and_its_last_lines(
    env: Env, docker_api: Any, base_image: str, tmp_path: Path
) -> None:
    build = _project(tmp_path, base_image, "print('x')\n")
    lines = " && ".join(f"echo out-{i}" for i in range(20))
    (tmp_path / "Dockerfile.train").write_text(f"FROM {base_image}\nRUN {lines} && exit 3\nCOPY train.py /\n")
    with pytest.raises(ImageError) as caught:
        ensure_image(env.aws(), docker_api, build, NullProgress(), cache=TokenCache())
    text = caught.value.render()
    assert caught.value.where == "docker build"
    assert "Step 2/5 : RUN echo out-0" in text and "non-zero code: 3" in text
    assert "out-19" in text and "out-5" in text and "out-4\n" not in text  # the last 15 lines
    assert "fix that Dockerfile step" in text


def test_refused_registry_credentials_name_the_registry(
    moto_endpoint: str, registry_factory: Any, docker_api: Any, base_image: str, tmp_path: Path
) -> None:
    wrong = registry_factory(password="not-the-ecr-token")
    build = _project(tmp_path, base_image, f"print('{uuid.uuid4().hex}')\n")
    with pytest.raises(ImageError) as caught:
        ensure_image(Env(moto_endpoint, wrong).aws(), docker_api, build, NullProgress(), cache=TokenCache())
    assert caught.value.where == f"registry {wrong}"
    assert "ecr:GetAuthorizationToken" in (caught.value.next_step or "")


def test_unreachable_engine_says_how_to_start_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(ImageError) as caught:
        engine()
    assert caught.value.where == "docker engine" and "unreachable" in caught.value.what
    assert "systemctl start docker" in (caught.value.next_step or "")


def test_prebuilt_uri_on_another_registry_is_checked_through_the_engine(
    env: Env, registry_factory: Any, docker_api: Any, tmp_path: Path
) -> None:
    open_registry = registry_factory(password=None)  # not ours: no ECR token applies
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "hello").write_text("hello\n")
    name = f"localhost:{open_registry.split(':')[1]}/prebuilt/{RUN}-{uuid.uuid4().hex[:8]}"
    tar = subprocess.Popen(["tar", "-C", str(tiny), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", f"{name}:v1"], stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    for _ in docker_api.push(name, tag="v1", stream=True, decode=True):
        pass
    found = check_prebuilt(env.aws(), None, f"{name}:v1", NullProgress())  # makes its own engine client
    assert found.uri_with_digest == f"{name}@{found.digest}" and found.digest.startswith("sha256:")
    with pytest.raises(ImageError, match="no such image"):
        check_prebuilt(env.aws(), None, f"{name}:v2", NullProgress())
