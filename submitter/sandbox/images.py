"""Local images the sandbox needs, built on this machine and never pulled.

- a Debian bookworm minbase rootfs (debootstrap, cached as a tarball) imported as the base image;
- the simulated host image: base + the docker CLI + the shutdown shim + the host init, and no AWS CLI on PATH,
  as on the ECS-optimized Amazon Linux 2023 AMI it stands for; a `dnf` stand-in installs `awscli-2` (the AWS
  CLI cached by this build) from a local repository, the way the boot script gets it on AWS (docs/sandbox.md).

`python -m submitter.sandbox.images` builds the base and, when no `python:3.11-slim` exists locally and
none can be pulled, tags the base as `python:3.11-slim` so `Dockerfile.train` builds offline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from submitter.errors import SandboxError

PACKAGES = "python3,ca-certificates,curl,e2fsprogs,util-linux,mount,procps"
BASE_REPO = "submitter-sandbox/bookworm"
HOST_REPO = "submitter-sandbox/host"
PYTHON_ALIAS = "python:3.11-slim"
HERE = Path(__file__).parent

Say = Callable[[str], None]

REPO = "/var/cache/submitter-dnf"  # the dnf stand-in's local repository (dnf.sh)

# `! command -v aws`: the image has no AWS CLI on PATH, so a boot that skips the install step fails here too;
# the cached awscli-2 package is checked to run on the image's python3.
DOCKERFILE = """\
FROM {base}
COPY docker /usr/bin/docker
COPY awscli {repo}/awscli-2/opt/awscli
COPY aws {repo}/awscli-2/usr/bin/aws
COPY dnf /usr/bin/dnf
COPY shutdown /usr/sbin/shutdown
COPY host-init /usr/sbin/submitter-host-init
RUN chmod 755 /usr/bin/docker {repo}/awscli-2/usr/bin/aws /usr/bin/dnf /usr/sbin/shutdown \\
      /usr/sbin/submitter-host-init \\
 && ln -sf shutdown /usr/sbin/poweroff && ln -sf shutdown /usr/sbin/halt \\
 && ! command -v aws \\
 && PYTHONPATH={repo}/awscli-2/opt/awscli python3 -m awscli --version
ENTRYPOINT ["/usr/sbin/submitter-host-init"]
"""

AWS_WRAPPER = """\
#!/bin/sh
# The AWS CLI (v1, pip package in /opt/awscli) on the image's python3: awscli-2's /usr/bin/aws in the sandbox.
PYTHONPATH=/opt/awscli exec python3 -m awscli "$@"
"""


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


def base_tag() -> str:
    return f"{BASE_REPO}:{_digest(PACKAGES.encode())}"


def _awscli_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("awscli")
    except PackageNotFoundError as exc:
        raise SandboxError(
            "sandbox host image", "the awscli package is not installed (it goes into the host image)",
            "pip install -e '.[sandbox]'",
        ) from exc


def _docker_binary() -> Path:
    found = shutil.which("docker")
    if not found:
        raise SandboxError(
            "sandbox host image", "no docker client binary on PATH (it is copied into the host image)",
            "apt-get install -y docker.io",
        )
    return Path(found).resolve()


def dockerfile(base: str) -> str:
    return DOCKERFILE.format(base=base, repo=REPO)


def host_tag() -> str:
    """The host image tag: a hash of everything that goes into it, so a change rebuilds it."""
    return f"{HOST_REPO}:" + _digest(
        base_tag().encode(),
        dockerfile("").encode(),
        AWS_WRAPPER.encode(),
        (HERE / "shutdown_shim.py").read_bytes(),
        (HERE / "host_init.sh").read_bytes(),
        (HERE / "dnf.sh").read_bytes(),
        _awscli_version().encode(),
        str(_docker_binary().stat().st_size).encode(),
    )


def _exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _run(cmd: list[str], where: str, fix: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as exc:
        raise SandboxError(where, f"{cmd[0]} is not installed", fix) from exc
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-5:]
        raise SandboxError(where, f"`{' '.join(cmd[:3])} ...` failed: " + " | ".join(tail), fix) from exc


def _tarball(cache: Path) -> Path:
    return cache / f"bookworm-minbase-{_digest(PACKAGES.encode())}.tar"


def needs_debootstrap(client: Any, cache: Path) -> bool:
    """True when building the host image would have to debootstrap (no image, no base, no cached rootfs)."""
    return not (_exists(client, host_tag()) or _exists(client, base_tag()) or _tarball(cache).exists())


def rootfs_tarball(cache: Path, say: Say) -> Path:
    """The bookworm minbase rootfs as a tarball, debootstrapped once (~1 min) and cached."""
    tarball = _tarball(cache)
    if tarball.exists():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    say("building a Debian bookworm rootfs with debootstrap (once; cached in " + str(cache) + ")")
    with tempfile.TemporaryDirectory(dir=cache, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        _run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(root)],
            "sandbox image (debootstrap)", "apt-get install -y debootstrap; check the Debian mirror is reachable",
            timeout=1800,
        )
        # `python` must resolve too: Dockerfiles written for python:3.11-slim call it.
        (root / "usr/bin/python").symlink_to("python3")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        partial = tarball.with_suffix(".partial")
        _run(["tar", "-C", str(root), "-cf", str(partial), "."], "sandbox image (tar)", "check free disk space")
        partial.rename(tarball)
    return tarball


def ensure_base(client: Any, cache: Path, say: Say) -> str:
    """The base image (bookworm + python3), imported from the cached rootfs when missing."""
    tag = base_tag()
    if _exists(client, tag):
        return tag
    tarball = rootfs_tarball(cache, say)
    say(f"importing {tag}")
    _run(
        ["docker", "import", "--change", 'CMD ["python3"]', str(tarball), tag],
        "sandbox image (docker import)", "check that dockerd runs: docker info",
    )
    return tag


def _awscli_dir(cache: Path, say: Say) -> Path:
    """The AWS CLI and its dependencies as a pip --target tree, for the host image's python3."""
    version = _awscli_version()
    target = cache / f"awscli-{version}-py{sys.version_info.major}{sys.version_info.minor}"
    if (target / "awscli").is_dir():
        return target
    say(f"installing awscli {version} for the host image (once; cached)")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(partial), f"awscli=={version}"],
        "sandbox host image (pip install awscli)", "check that the Python package index is reachable",
        timeout=900,
    )
    partial.rename(target)
    return target


def ensure_host(client: Any, cache: Path, say: Say) -> str:
    """The simulated host image, built when missing; returns its tag."""
    import docker.errors

    tag = host_tag()
    if _exists(client, tag):
        return tag
    base = ensure_base(client, cache, say)
    awscli = _awscli_dir(cache, say)
    say(f"building {tag}")
    with tempfile.TemporaryDirectory(prefix="submitter-host-") as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_text(dockerfile(base))
        shutil.copy2(_docker_binary(), ctx / "docker")
        shutil.copytree(awscli, ctx / "awscli", symlinks=True)
        (ctx / "aws").write_text(AWS_WRAPPER)
        shutil.copy2(HERE / "shutdown_shim.py", ctx / "shutdown")
        shutil.copy2(HERE / "host_init.sh", ctx / "host-init")
        shutil.copy2(HERE / "dnf.sh", ctx / "dnf")
        try:
            client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True, network_mode="none")
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            raise SandboxError(
                "sandbox host image", f"docker build failed: {exc}", "run with --debug and see the build log",
            ) from exc
    return tag


def ensure_python_alias(client: Any, cache: Path, say: Say) -> str:
    """Tag the base as python:3.11-slim, only if there is no such image and it cannot be pulled."""
    if _exists(client, PYTHON_ALIAS):
        return f"{PYTHON_ALIAS} exists already"
    try:
        subprocess.run(["docker", "pull", PYTHON_ALIAS], check=True, capture_output=True, timeout=60)
        return f"{PYTHON_ALIAS} pulled"
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError):
        pass
    base = ensure_base(client, cache, say)
    client.images.get(base).tag(PYTHON_ALIAS)
    return f"{PYTHON_ALIAS} tagged from {base} (bookworm + python3, no pip)"


def main(argv: list[str]) -> int:
    import docker

    from submitter import settings as settings_mod

    cfg = settings_mod.load(os.environ, Path.cwd())
    client = docker.from_env()
    cache = cfg.home / "cache"

    def say(text: str) -> None:
        print(text, file=sys.stderr)

    try:
        print(ensure_python_alias(client, cache, say))
        if "--host" in argv:
            print(ensure_host(client, cache, say))
    except SandboxError as err:
        print(f"error: {err.render()}", file=sys.stderr)
        return 1
    size = client.images.get(base_tag()).attrs["Size"]
    print(f"{base_tag()}: {size / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
