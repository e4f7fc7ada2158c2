"""An in-memory implementation of the runtime's store interface, for the runtime's unit tests. Not a test
module: loaded by path (tests/unit/test_runtime_*.py), also into a process that imports the runtime from the
built artefact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from submitter.runtime.commands import Result
from submitter.runtime.store import Store


class MemoryStore(Store):
    """S3 in a dict (whole keys), SSM values made up from the names, a fixed spot price, SQS as a list."""

    def __init__(self, bucket: str = "wbucket") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.queue: list[dict[str, Any]] = []
        self.sqs_calls: list[tuple[str, ...]] = []

    def get_bytes(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def put_bytes(self, key: str, data: bytes, content_type: str = "text/plain") -> None:
        self.objects[key] = bytes(data)

    def exists(self, key: str) -> bool:
        return key in self.objects

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def download(self, uri: str, dest: Path, kind: str) -> int:
        key = uri.split("/", 3)[3]
        found = {k: v for k, v in self.objects.items() if k.startswith(key)}
        if kind != "file":
            dest.mkdir(parents=True, exist_ok=True)
        for k, v in found.items():
            target = dest if kind == "file" else dest / k[len(key):].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(v)
        return len(found)

    def upload_tree(self, local: Path, prefix: str, seen: dict[str, tuple[int, int]]) -> None:
        for path in [p for p in local.rglob("*") if p.is_file()] if local.is_dir() else []:
            self.objects[prefix.rstrip("/") + "/" + path.relative_to(local).as_posix()] = path.read_bytes()

    def parameters(self, names: list[str]) -> list[tuple[str, str]]:
        return [(n, "value-of-" + n.rsplit("/", 1)[-1]) for n in names]

    def spot_price(self, instance_type: str, zone: str) -> float | None:
        return 0.5

    def registry_password(self) -> Result:
        return Result(0, "token", "")

    def change_visibility(self, queue_url: str, receipt: str, seconds: int) -> None:
        self.sqs_calls.append(("change-visibility", receipt, str(seconds)))

    def delete_message(self, queue_url: str, receipt: str) -> None:
        self.sqs_calls.append(("delete", receipt))

    def json(self, key: str) -> Any:
        return json.loads(self.objects[key])
