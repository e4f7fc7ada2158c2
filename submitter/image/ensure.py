"""The training image: build it with the docker SDK under its content-hash tag and push it to ECR,
unless the registry already holds that tag; or check that a prebuilt `image.uri` exists.

Runs get `ImageResult.uri_with_digest`, so every instance pulls exactly the bytes that were pushed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from submitter.aws.ecr import Ecr, RegistryAuth, TokenCache
from submitter.aws.session import Aws
from submitter.context import PLATFORM, content_tag
from submitter.errors import ImageError
from submitter.image.build import BuildRequest
from submitter.image.build import build as build_image
from submitter.image.push import push, pushed_bytes
from submitter.image.registry import distribution_digest, manifest_digest, read_manifest
from submitter.image.wording import first_line, human
from submitter.progress import Progress

_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


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
            f"unreachable ({first_line(str(exc))})",
            "start Docker: open Docker Desktop, or `sudo systemctl start docker`; check DOCKER_HOST",
        ) from exc
    return client.api


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
    image_id = build_image(api, build, f"{name}:{tag}", progress)
    progress.step(f"pushing {name}:{tag}")
    log = push(api, name, tag, auth, progress)
    if not log.digest:
        raise ImageError(f"push {name}:{tag}", "the engine reported no manifest digest", "submit again")
    diff_ids = list(api.inspect_image(image_id)["RootFS"]["Layers"])
    manifest = read_manifest(auth, repo.name, log.digest)
    sent, image_bytes = pushed_bytes(log, diff_ids, manifest)
    progress.done(
        f"pushed {name}@{log.digest[:19]}: {len(log.uploaded)} of {len(diff_ids)} layers, "
        f"{human(sent)} of {human(image_bytes)}"
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
        return manifest_digest(auth, repository, tag)
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
        found = manifest_digest(ecr.registry_auth(host), repository, digest or tag or "latest")
    elif ecr_host and ecr_host.group(2) == aws.region and not aws.registry:
        found = ecr.image_digest(repository, tag, digest=digest, registry_id=ecr_host.group(1))
    else:  # another registry: the engine asks it (with the credentials of `docker login`)
        client = docker_client if docker_client is not None else engine()
        found = distribution_digest(getattr(client, "api", client), uri)
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
