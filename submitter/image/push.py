"""Pushing the image: the push stream turned into facts (which layers went up, which the registry had), the
bytes that crossed the wire, and push failures worded with the IAM actions to allow."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from submitter.aws.ecr import RegistryAuth
from submitter.errors import ImageError
from submitter.image.wording import DISK_FULL, auth_refused, disk_full, first_line
from submitter.progress import Progress

_REUSED = ("Layer already exists", "Mounted from")


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


def push_log(events: Iterable[Mapping[str, Any]]) -> PushLog:
    """The PushLog of a whole push stream (pure: the unit tests feed recorded streams)."""
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


def push(api: Any, name: str, tag: str, auth: RegistryAuth, progress: Progress) -> PushLog:
    from docker.errors import APIError

    log = PushLog()
    try:
        for event in api.push(name, tag=tag, stream=True, decode=True, auth_config=auth.auth_config()):
            log.feed(event)
            if log.error:
                raise push_error(auth.registry, name, log.error)
            if event.get("id") and event.get("status"):
                detail = event.get("progressDetail") or {}
                current, total = detail.get("current"), detail.get("total")
                progress.layer(str(event["id"]), str(event["status"]), current, total)
    except APIError as exc:
        raise push_error(auth.registry, name, str(exc.explanation or exc)) from exc
    return log


def push_error(registry: str, name: str, message: str) -> ImageError:
    low = message.lower()
    if DISK_FULL in low:
        return disk_full(f"docker push {name}", message)
    if "unauthorized" in low or "authentication required" in low or re.search(r"\b401\b", low):
        return auth_refused(registry, message)
    if "denied" in low or "not authorized" in low or "accessdenied" in low:
        actions = sorted(set(re.findall(r"ecr:[A-Za-z]+", message))) or [
            "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
            "ecr:CompleteLayerUpload", "ecr:PutImage",
        ]
        return ImageError(
            f"docker push {name}", f"the repository policy or IAM denied the push ({first_line(message)})",
            f"allow {', '.join(actions)} on the repository for your IAM identity",
        )
    return ImageError(f"docker push {name}", first_line(message), "check the registry and submit again")
