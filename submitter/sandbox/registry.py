"""The sandbox's container registry: Debian's `docker-registry` (distribution) on loopback, with htpasswd
auth that accepts exactly the user and password the sandbox's ECR GetAuthorizationToken hands out.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from submitter.errors import SandboxError
from submitter.sandbox import state as st

CONFIG = """\
version: 0.1
log:
  level: info
  fields:
    service: submitter-sandbox-registry
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: submitter-sandbox
    path: {htpasswd}
"""


def config_path(paths: st.Paths) -> Path:
    return paths.root / "registry.yml"


def start(paths: st.Paths, port: int, username: str, password: str) -> int:
    """Write the config and htpasswd, start the registry detached, wait until it answers; returns its pid."""
    paths.registry_dir.mkdir(parents=True, exist_ok=True)
    htpasswd = paths.root / "htpasswd"
    entry = subprocess.run(["htpasswd", "-Bbn", username, password], check=True, capture_output=True, text=True)
    htpasswd.write_text(entry.stdout.strip() + "\n")
    htpasswd.chmod(0o600)
    config = config_path(paths)
    config.write_text(CONFIG.format(storage=paths.registry_dir, port=port, htpasswd=htpasswd))
    with paths.registry_log.open("ab") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True,  # outlives `sandbox up`; `down` stops it by pid
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = paths.registry_log.read_text(errors="replace").strip().splitlines()[-3:]
            raise SandboxError("sandbox registry", "docker-registry exited: " + " | ".join(tail),
                               f"see {paths.registry_log}")
        if answers(port):
            return proc.pid
        time.sleep(0.2)
    raise SandboxError("sandbox registry", f"docker-registry did not answer on 127.0.0.1:{port} within 30 s",
                       f"see {paths.registry_log}")


def answers(port: int) -> bool:
    """True when the registry's /v2/ answers (401 without credentials is an answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
            return True
    except urllib.error.HTTPError as err:
        return err.code in (200, 401)
    except OSError:
        return False


def marker(paths: st.Paths) -> str:
    """What identifies this sandbox's registry process in its command line."""
    return str(config_path(paths))
