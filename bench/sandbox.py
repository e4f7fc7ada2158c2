"""A private sandbox for one benchmark: its own SUBMITTER_HOME (a temporary directory) and a free port base,
taken down at the end whatever happens. Never the user's ~/.submitter sandbox or another session's.

The sandbox host image stays in the docker engine between runs; when it is missing, the machine's cached
rootfs and AWS CLI tree (~/.submitter/cache, as the e2e tests use them) are linked in read-only fashion so the
image is not rebuilt from nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STABLE_CACHE = Path("~/.submitter/cache").expanduser()


def free_port_base() -> int:
    """A free port base above 50000 (tests use 46000 up), so a benchmark never meets a test's sandbox."""
    from submitter.sandbox import state

    return state.free_port_base(50000)


@dataclass
class Sandbox:
    """A running private sandbox: its settings and state, and the environment a subprocess needs to use it."""

    settings: Any
    state: dict[str, Any]
    env: dict[str, str]  # os.environ + SUBMITTER_HOME/PORT/SANDBOX + `sandbox env` (AWS_ENDPOINT_URL, keys)
    home: Path

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.state["endpoint_url"], region_name=self.state["region"],
                            aws_access_key_id=self.state["access_key_id"],
                            aws_secret_access_key=self.state["secret_access_key"])


def _say(text: str) -> None:
    print(f"[bench sandbox] {text}", file=sys.stderr, flush=True)


@contextmanager
def private_sandbox(say: Callable[[str], None] = _say) -> Iterator[Sandbox]:
    from submitter import settings as settings_mod
    from submitter.sandbox import api

    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    if STABLE_CACHE.is_dir():
        (home / "cache").symlink_to(STABLE_CACHE)
    environ = {"SUBMITTER_HOME": str(home), "SUBMITTER_SANDBOX_PORT": str(free_port_base()),
               "SUBMITTER_SANDBOX": "1"}
    settings = settings_mod.load(environ, home)  # cwd=home: no stray .env is read
    started = time.perf_counter()
    try:
        state = api.up(settings, say)
        say(f"up in {time.perf_counter() - started:.1f} s on port base {settings.sandbox_port} (home {home})")
        env = {**os.environ, **environ, **api.env(settings)}
        yield Sandbox(settings, state, env, home)
    finally:
        api.down(settings, say)
        shutil.rmtree(home, ignore_errors=True)
