"""The training image: build it with the docker SDK under its content-hash tag and push it to ECR,
unless the registry already holds that tag; or check that a prebuilt `image.uri` exists.

Runs get `ImageResult.uri_with_digest`, so every instance pulls exactly the bytes that were pushed.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitter.aws.ecr import Ecr, RegistryAuth, TokenCache
from submitter.aws.session import Aws
from submitter.context import PLATFORM, content_tag
from submitter.errors import ImageError
from submitter.progress import Progress

STEP_TAIL_LINES = 15
_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
_REUSED = ("Layer already exists", "Mounted from")
_DISK_FULL = "no space left on device"
_BUILD_NOISE = (" ---> ", "Removing intermediate", "Successfully")


@dataclass(frozen=True)
class BuildRequest:
    """What the plan says about the image of one job."""

    job: str
    dockerfile: Path
    context: Path
    build_args: Mapping[str, str] = field(default_factory=dict)
    repository: str = "submitter"  # ECR repository name (Settings.ecr_repository)
    tag: str | None = None  # the plan's content tag; computed from the context when None
    uri: str | None = None  # prebuilt image: no build, no push, only an existence check


@dataclass(frozen=True)
class ImageResult:
    """What happened, as facts: runs record `uri_with_digest`; tests and the CLI read the rest."""

    uri_with_digest: str
    tag: str
    digest: str
    built: bool
    pushed: bool
    bytes_pushed: int = 0  # compressed bytes uploaded: new layer blobs, their config, the manifest
    layers_pushed: int = 0  # layers uploaded; layers the registry already had are not counted
    layers_total: int = 0
    image_bytes: int = 0  # compressed size of the whole image in the registry (layers, config, manifest)
    image_id: str | None = None  # local image id when built here


# ---------------------------------------------------------------------------------------------- engine


def engine() -> Any:
    """A low-level docker client (`docker.APIClient`) from the environment, or a clear error."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise ImageError(
            "docker engine",
            f"unreachable ({_first_line(str(exc))})",
            "start Docker: open Docker Desktop, or `sudo systemctl start docker`; check DOCKER_HOST",
        ) from exc
    return client.api


# ---------------------------------------------------------------------------------------------- main


def ensure_image(
    aws: Aws, docker_client: Any, build: BuildRequest, progress: Progress, *, cache: TokenCache | None = None
) -> ImageResult:
    """The image of `build`, in the registry: built and pushed only when its tag is not there yet."""
    ecr = Ecr(aws, cache)
    if build.uri:
        return check_prebuilt(aws, docker_client, build.uri, progress, ecr=ecr)
    tag = build.tag or content_tag(build.dockerfile, build.context, build.build_args)
    repo = ecr.ensure_repository(build.repository)
    registry = aws.registry or repo.uri.split("/", 1)[0]
    name = f"{registry}/{repo.name}"
    auth = ecr.registry_auth(registry)

    digest = _existing_digest(ecr, aws, auth, repo.name, tag)
    if digest:
        progress.done(f"image up to date: {name}:{tag} ({digest[:19]}); no build, no push")
        return ImageResult(f"{name}@{digest}", tag, digest, built=False, pushed=False)

    api = getattr(docker_client, "api", docker_client)  # accept DockerClient or APIClient
    progress.step(f"building {name}:{tag} ({PLATFORM})")
    image_id = _build(api, build, f"{name}:{tag}", progress)
    progress.step(f"pushing {name}:{tag}")
    log = _push(api, name, tag, auth, progress)
    if not log.digest:
        raise ImageError(f"push {name}:{tag}", "the engine reported no manifest digest", "submit again")
    diff_ids = list(api.inspect_image(image_id)["RootFS"]["Layers"])
    manifest = _manifest(auth, repo.name, log.digest)
    sent, image_bytes = pushed_bytes(log, diff_ids, manifest)
    progress.done(
        f"pushed {name}@{log.digest[:19]}: {len(log.uploaded)} of {len(diff_ids)} layers, "
        f"{_human(sent)} of {_human(image_bytes)}"
    )
    return ImageResult(
        f"{name}@{log.digest}", tag, log.digest, built=True, pushed=True, bytes_pushed=sent,
        layers_pushed=len(log.uploaded), layers_total=len(diff_ids), image_bytes=image_bytes,
        image_id=image_id,
    )


def _existing_digest(ecr: Ecr, aws: Aws, auth: RegistryAuth, repository: str, tag: str) -> str | None:
    # With a registry override (the sandbox) the ECR API and the registry are separate services, and
    # only the registry knows what was pushed: ask it. On AWS they are one service: ask the ECR API.
    if aws.registry:
        return _manifest_digest(auth, repository, tag)
    return ecr.image_digest(repository, tag)


def check_prebuilt(
    aws: Aws, docker_client: Any, uri: str, progress: Progress, *, ecr: Ecr | None = None
) -> ImageResult:
    """A prebuilt image must exist before anything is launched; returns it pinned by digest.

    `docker_client` may be None: an engine is only needed (and then made) for registries other than ours.
    """
    ecr = ecr or Ecr(aws)
    host, repository, tag, digest = parse_reference(uri)
    ecr_host = _ECR_HOST.match(host)
    found: str | None
    if aws.registry and host == aws.registry:
        found = _manifest_digest(ecr.registry_auth(host), repository, digest or tag or "latest")
    elif ecr_host and ecr_host.group(2) == aws.region and not aws.registry:
        found = ecr.image_digest(repository, tag, digest=digest, registry_id=ecr_host.group(1))
    else:  # another registry: the engine asks it (with the credentials of `docker login`)
        client = docker_client if docker_client is not None else engine()
        found = _distribution_digest(getattr(client, "api", client), uri)
    if not found:
        raise ImageError(
            f"image.uri {uri}",
            "no such image in the registry",
            "push it first, or fix image.uri (a tag or @sha256 digest that exists)",
        )
    progress.done(f"prebuilt image found: {host}/{repository}@{found[:19]}")
    return ImageResult(f"{host}/{repository}@{found}", tag or "", found, built=False, pushed=False)


def parse_reference(uri: str) -> tuple[str, str, str | None, str | None]:
    """`host/repo[:tag][@sha256:...]` -> (host, repo, tag, digest). A name without host is Docker Hub's."""
    rest, _, digest = uri.partition("@")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        host, path = first, remainder
    else:
        host, path = "docker.io", rest if "/" in rest else f"library/{rest}"
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    return host, path, tag, digest or None


# ---------------------------------------------------------------------------------------------- build


def build_labels(build: BuildRequest, tag: str) -> dict[str, str]:
    """OCI revision (git commit of the context), whether its work tree is dirty, the job and the tag."""
    labels = {"submitter.job": build.job, "submitter.tag": tag}
    commit = _git(build.context, "rev-parse", "HEAD")
    if commit:
        labels["org.opencontainers.image.revision"] = commit
        # Only the context matters to the image, so only changes under it make the build "dirty".
        changes = _git(build.context, "status", "--porcelain", "--", ".")
        labels["submitter.dirty"] = "true" if changes else "false"
    return labels


def _build(api: Any, build: BuildRequest, reference: str, progress: Progress) -> str:
    from docker.errors import APIError

    step = ""
    tail: deque[str] = deque(maxlen=STEP_TAIL_LINES)
    image_id = None
    try:
        stream = api.build(
            path=str(build.context),
            dockerfile=str(build.dockerfile.resolve()),
            tag=reference,
            buildargs=dict(build.build_args),
            labels=build_labels(build, reference.rsplit(":", 1)[1]),
            platform=PLATFORM,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for event in stream:
            if "error" in event or "errorDetail" in event:
                message = (event.get("errorDetail") or {}).get("message") or event.get("error") or ""
                raise _build_error(step, message, list(tail))
            if "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
                image_id = event["aux"]["ID"]
            text = event.get("stream") or event.get("status")
            if not text:
                continue
            for line in str(text).splitlines():
                if re.match(r"^Step \d+/\d+ : ", line):
                    step = line
                    tail.clear()
                    progress.step(line)
                elif line.strip() and not line.startswith(_BUILD_NOISE):
                    tail.append(line)
                    progress.step(f"  {line}")
    except APIError as exc:
        raise _build_error(step, str(exc.explanation or exc), list(tail)) from exc
    if not image_id:
        image_id = api.inspect_image(reference)["Id"]
    return str(image_id)


def _build_error(step: str, message: str, tail: list[str]) -> ImageError:
    if _DISK_FULL in message:
        return _disk_full("docker build", message)
    what = f"{step or 'before the first step'} failed: {_first_line(message)}"
    if tail:
        what += "\n  last output:\n" + "\n".join(f"    {line}" for line in tail)
    return ImageError("docker build", what, "fix that Dockerfile step (or files it uses) and submit again")


def _disk_full(where: str, message: str) -> ImageError:
    return ImageError(
        where, f"no space left on device ({_first_line(message)})",
        "free disk space: `docker system prune` (and `docker builder prune`), then submit again",
    )


# ---------------------------------------------------------------------------------------------- push


@dataclass
class PushLog:
    """The facts of one `docker push` stream: which layers went up, which the registry already had."""

    uploaded: list[str] = field(default_factory=list)  # layer ids as the stream names them ("Pushed")
    reused: list[str] = field(default_factory=list)  # "Layer already exists" / "Mounted from ..."
    progress_totals: dict[str, int] = field(default_factory=dict)  # uncompressed bytes seen per layer
    digest: str | None = None
    manifest_size: int = 0
    error: str | None = None

    def feed(self, event: Mapping[str, Any]) -> None:
        if "error" in event or "errorDetail" in event:
            self.error = str((event.get("errorDetail") or {}).get("message") or event.get("error"))
            return
        aux = event.get("aux")
        if isinstance(aux, Mapping) and aux.get("Digest"):
            self.digest = str(aux["Digest"])
            self.manifest_size = int(aux.get("Size") or 0)
            return
        layer, status = event.get("id"), str(event.get("status") or "")
        if not layer:
            return
        if status == "Pushed" and layer not in self.uploaded:
            self.uploaded.append(layer)
        elif status.startswith(_REUSED) and layer not in self.reused:
            self.reused.append(layer)
        elif status == "Pushing":
            # `current` counts uncompressed tar bytes read so far; `total` is not reliable (it can be
            # smaller than `current`), so the largest of the two seen stands in when no manifest is read.
            detail = event.get("progressDetail") or {}
            seen = max(int(detail.get("current") or 0), int(detail.get("total") or 0))
            self.progress_totals[layer] = max(seen, self.progress_totals.get(layer, 0))


def account(events: Iterable[Mapping[str, Any]]) -> PushLog:
    """A PushLog from a recorded push stream (pure: the unit tests feed recorded streams)."""
    log = PushLog()
    for event in events:
        log.feed(event)
    return log


def pushed_bytes(log: PushLog, diff_ids: list[str], manifest: Mapping[str, Any] | None) -> tuple[int, int]:
    """(bytes uploaded, image bytes), both compressed as stored in the registry.

    The push stream names a layer by the first 12 hex digits of its diff id (the digest of the
    uncompressed tar), and its byte counters count uncompressed bytes. What actually crosses the wire is
    the gzip blob, whose size only the registry's manifest records. The image config lists diff ids in
    the same order as the manifest lists blobs, so: stream id -> index in RootFS.Layers -> manifest
    layers[index].size. The manifest is always uploaded; the config blob too whenever a layer was (new
    layers make a new config). Without a manifest (registry unreadable) the stream's uncompressed totals
    stand in.
    """
    if not manifest or len(manifest.get("layers", [])) != len(diff_ids):
        sent = sum(log.progress_totals.get(layer, 0) for layer in log.uploaded)
        return sent + log.manifest_size, sum(log.progress_totals.values()) + log.manifest_size
    short = [d.split(":", 1)[-1][:12] for d in diff_ids]
    sizes = [int(layer["size"]) for layer in manifest["layers"]]
    config = int(manifest.get("config", {}).get("size", 0))
    sent = sum(sizes[short.index(layer)] for layer in log.uploaded if layer in short) + log.manifest_size
    if log.uploaded:
        sent += config
    return sent, sum(sizes) + config + log.manifest_size


def _push(api: Any, name: str, tag: str, auth: RegistryAuth, progress: Progress) -> PushLog:
    from docker.errors import APIError

    log = PushLog()
    try:
        for event in api.push(name, tag=tag, stream=True, decode=True, auth_config=auth.auth_config()):
            log.feed(event)
            if log.error:
                raise _push_error(auth.registry, name, log.error)
            if event.get("id") and event.get("status"):
                detail = event.get("progressDetail") or {}
                current, total = detail.get("current"), detail.get("total")
                progress.layer(str(event["id"]), str(event["status"]), current, total)
    except APIError as exc:
        raise _push_error(auth.registry, name, str(exc.explanation or exc)) from exc
    return log


def _push_error(registry: str, name: str, message: str) -> ImageError:
    low = message.lower()
    if _DISK_FULL in low:
        return _disk_full(f"docker push {name}", message)
    if "unauthorized" in low or "authentication required" in low or re.search(r"\b401\b", low):
        return _auth_refused(registry, message)
    if "denied" in low or "not authorized" in low or "accessdenied" in low:
        actions = sorted(set(re.findall(r"ecr:[A-Za-z]+", message))) or [
            "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
            "ecr:CompleteLayerUpload", "ecr:PutImage",
        ]
        return ImageError(
            f"docker push {name}", f"the repository policy or IAM denied the push ({_first_line(message)})",
            f"allow {', '.join(actions)} on the repository for your IAM identity",
        )
    return ImageError(f"docker push {name}", _first_line(message), "check the registry and submit again")


def _auth_refused(registry: str, message: str) -> ImageError:
    return ImageError(
        f"registry {registry}", f"refused the credentials ({_first_line(message)})",
        "check that your identity may call `ecr:GetAuthorizationToken` and that SUBMITTER_REGISTRY / "
        "the region point at the right registry",
    )


# ---------------------------------------------------------------------------------------------- registry


def _manifest_digest(auth: RegistryAuth, repository: str, reference: str) -> str | None:
    status, headers, _ = _registry(auth, "HEAD", f"/v2/{repository}/manifests/{reference}")
    return headers.get("docker-content-digest") if status == 200 else None


def _manifest(auth: RegistryAuth, repository: str, digest: str) -> dict[str, Any] | None:
    try:
        status, _, body = _registry(auth, "GET", f"/v2/{repository}/manifests/{digest}")
    except ImageError:
        return None  # only the byte count needs it; the push itself succeeded
    return json.loads(body) if status == 200 else None


def _registry(auth: RegistryAuth, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One registry v2 API call with Basic auth (ECR accepts its token this way, as does htpasswd)."""
    import urllib.error
    import urllib.request

    host = auth.registry
    loopback = host.split(":")[0] in ("localhost", "127.0.0.1", "::1") or host.startswith("[::1]")
    url = f"{'http' if loopback else 'https'}://{host}{path}"
    token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": f"Basic {token}", "Accept": _MANIFEST_TYPES}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise _auth_refused(host, f"HTTP 401 on {path}") from exc
        if exc.code == 403:
            raise ImageError(
                f"registry {host}", f"access denied (HTTP 403 on {path})",
                "allow ecr:BatchGetImage and ecr:DescribeImages on the repository for your IAM identity",
            ) from exc
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, b""
    except (urllib.error.URLError, OSError) as exc:
        raise ImageError(
            f"registry {host}", f"unreachable ({exc})", "check the network, the region and SUBMITTER_REGISTRY"
        ) from exc


def _distribution_digest(api: Any, uri: str) -> str | None:
    from docker.errors import APIError, NotFound

    try:
        return str(api.inspect_distribution(uri)["Descriptor"]["digest"])
    except NotFound:
        return None
    except APIError as exc:
        text = str(exc.explanation or exc).lower()
        if "not found" in text or "manifest unknown" in text or "does not exist" in text:
            return None
        if "unauthorized" in text or "denied" in text:
            raise ImageError(f"image.uri {uri}", f"the registry refused access ({_first_line(text)})",
                             "`docker login` to that registry, or make the image public") from exc
        raise ImageError(f"image.uri {uri}", _first_line(str(exc)), "check the image reference") from exc


# ---------------------------------------------------------------------------------------------- helpers


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else text.strip()


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
