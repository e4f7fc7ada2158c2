"""Reading the registry directly (the v2 API, or the engine for registries other than ours): whether a tag
exists, its manifest digest, and the manifest whose blob sizes say what a push really sent."""

from __future__ import annotations

import base64
import json
from typing import Any

from submitter.aws.ecr import RegistryAuth
from submitter.errors import ImageError
from submitter.image.wording import auth_refused, first_line

_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def manifest_digest(auth: RegistryAuth, repository: str, reference: str) -> str | None:
    status, headers, _ = _registry(auth, "HEAD", f"/v2/{repository}/manifests/{reference}")
    return headers.get("docker-content-digest") if status == 200 else None


def read_manifest(auth: RegistryAuth, repository: str, digest: str) -> dict[str, Any] | None:
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
            raise auth_refused(host, f"HTTP 401 on {path}") from exc
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


def distribution_digest(api: Any, uri: str) -> str | None:
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
            raise ImageError(f"image.uri {uri}", f"the registry refused access ({first_line(text)})",
                             "`docker login` to that registry, or make the image public") from exc
        raise ImageError(f"image.uri {uri}", first_line(str(exc)), "check the image reference") from exc
