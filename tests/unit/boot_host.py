"""A host for the boot script made of exactly the tools it is given (a PATH of links), with the sandbox's dnf
stand-in over a root of its own and the sandbox's IMDS emulator; only `shutdown` and `docker` are stubs.
Shared by tests/unit/test_boot_tools.py and tests/functional/test_boot_report.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from submitter.runtime import artefact
from submitter.sandbox import images
from submitter.sandbox.imds import Imds

STANDIN = Path(images.HERE) / "dnf.sh"
SHA = "0" * 64
# What the boot script and the dnf stand-in call; anything else is absent, as on a minimal image.
TOOLS = ["bash", "sh", "curl", "sed", "date", "tr", "tail", "timeout", "sleep", "mkdir", "sha256sum", "cp", "touch",
         "cat", "rm", "readlink", "tar", "basename"]


def render(**values: str | int) -> str:
    return artefact.user_data({"SUBMISSION": "s-1", "BUCKET": "b", "PREFIX": "p", "GROUP": "g",
                               "DEADMAN_MINUTES": 30, "RUNTIME_SHA256": SHA, "BUCKET_OWNER": "123456789012",
                               **values})


def package(root: Path, name: str, files: dict[str, str]) -> None:
    """A package in the stand-in's repository under `root`: files laid over the root when installed."""
    for rel, text in files.items():
        path = root / "var/cache/submitter-dnf" / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)


class Host:
    """A directory that is the host: its PATH (links to the given tools), its root for dnf, its logs."""

    def __init__(self, base: Path, imds: Imds, tools: list[str]) -> None:
        self.base, self.imds = base, imds
        self.bin, self.root = base / "bin", base / "root"
        self.bin.mkdir()
        for tool in tools:
            found = sys.executable if tool == "python3" else shutil.which(tool)
            assert found, tool
            (self.bin / tool).symlink_to(found)
        self.stub("shutdown", f'echo "$*" >> {base}/shutdown.log')
        self.stub("docker", "exit 0")
        self.stub("dnf", f'exec sh {STANDIN} --installroot={self.root} "$@"')
        (self.root / "var/cache/submitter-dnf").mkdir(parents=True)

    def stub(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def boot(self, user_data: str, endpoint: str = "http://127.0.0.1:9",
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        script = self.base / "part-001"
        script.write_text(user_data)
        env = {"PATH": f"{self.bin}:{self.root}/usr/bin:{self.root}/usr/sbin", "TMPDIR": str(self.base),
               "HOME": str(self.base), "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.imds.endpoint,
               "AWS_ENDPOINT_URL": endpoint, **(extra_env or {})}
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=False,
                              timeout=120, cwd=self.base)

    def shutdowns(self) -> list[str]:
        log = self.base / "shutdown.log"
        return log.read_text().splitlines() if log.exists() else []
