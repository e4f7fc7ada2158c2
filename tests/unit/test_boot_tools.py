"""The boot script needs only what the AMI has: it installs the AWS CLI (AL2023's awscli-2) before its first `aws`
call, gives up with the installer's own reason when it cannot, and still reports without the CLI
(boot_report.py, SigV4 with the standard library). The script runs on a host made of exactly the tools it is
given (boot_host.py), with the sandbox's dnf stand-in and IMDS emulator; only `shutdown` and `docker` are stubs,
since powering off and running containers are not what is tested."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from boot_host import STANDIN, TOOLS, Host, package, render
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from submitter import contract
from submitter.runtime import artefact, boot_report
from submitter.sandbox.imds import Imds, InstanceMeta

INSTANCE = "i-0b00710015ab1e000"


def test_the_rendered_boot_script_is_valid_bash(tmp_path: Path) -> None:
    script = tmp_path / "user-data"
    script.write_text(render())
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert len(render().encode()) <= artefact.USER_DATA_LIMIT


def test_the_aws_cli_is_installed_before_the_first_aws_call() -> None:
    lines = artefact.template().splitlines()
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("INSTALL_START=")):]
    install = next(i for i, line in enumerate(body) if line.startswith("install_tool aws awscli-2 "))
    first_aws = next(i for i, line in enumerate(body) if re.search(r"(^|\s)aws (s3api|s3|autoscaling) ", line))
    assert install < first_aws
    # The package is Amazon Linux 2023's (awscli-2), not the v1 `awscli` of Amazon Linux 2 or pip.
    assert "dnf install -y -q \"$2\"" in artefact.template()


# ----------------------------------------------------------------------------------------- the dnf stand-in


def _dnf(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(STANDIN), f"--installroot={root}", *args], capture_output=True, text=True,
                          check=False, timeout=30)


def test_the_dnf_standin_installs_from_its_local_repository_only(tmp_path: Path) -> None:
    package(tmp_path, "awscli-2", {"usr/bin/aws": "#!/bin/sh\necho aws-cli/2\n"})
    installed = _dnf(tmp_path, "install", "-y", "-q", "awscli-2")
    assert installed.returncode == 0 and installed.stderr == ""
    assert (tmp_path / "usr/bin/aws").read_text() == "#!/bin/sh\necho aws-cli/2\n"
    again = _dnf(tmp_path, "install", "-y", "awscli-2")
    assert again.returncode == 0 and "Package awscli-2 is already installed." in again.stdout
    # A package the repository does not have: dnf's own words, nothing installed.
    unknown = _dnf(tmp_path, "install", "-y", "awscli-2", "nvidia-driver")
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines() == ["No match for argument: nvidia-driver",
                                           "Error: Unable to find a match: nvidia-driver"]


def test_the_dnf_standin_without_a_repository_fails_as_an_unreachable_one(tmp_path: Path) -> None:
    out = _dnf(tmp_path, "install", "-y", "awscli-2")
    assert out.returncode == 1 and "Failed to download metadata for repo 'amazonlinux'" in out.stderr
    assert not (tmp_path / "usr").exists()
    assert _dnf(tmp_path, "upgrade").returncode == 1


# ----------------------------------------------------------------------------------------- the boot, run


@pytest.fixture()
def imds() -> Iterator[Imds]:
    meta = InstanceMeta(INSTANCE, "c5.large", "us-east-1a", "us-east-1", "", role_name="boot-role")
    server = Imds(meta).start()
    yield server
    server.stop()


def test_a_boot_that_cannot_install_the_aws_cli_says_why_reports_without_it_and_powers_off(
        tmp_path: Path, imds: Imds) -> None:
    host = Host(tmp_path, imds, [*TOOLS, "python3"])  # the repository has no awscli-2
    out = host.boot(render())
    assert out.returncode == 1, out.stdout + out.stderr
    assert "boot failed: cannot install the AWS CLI: Error: Unable to find a match: awscli-2" in out.stdout
    assert host.shutdowns() == ["-h +30 submitter: max_runtime reached", "-h now"]
    report = json.loads((tmp_path / "submitter-boot.json").read_text())
    assert report["state"] == "boot-failed" and report["instance_id"] == INSTANCE
    assert report["reason"] == "cannot install the AWS CLI: Error: Unable to find a match: awscli-2"
    # No AWS CLI, so the standard-library reporter tried (nothing listens at the endpoint here; see
    # tests/functional/test_boot_report.py for the report arriving and the group shrinking).
    assert "boot failure not reported to S3" in out.stdout and "did not leave an Auto Scaling group" in out.stdout


def test_a_boot_on_a_host_without_python3_still_says_why_and_powers_off(tmp_path: Path, imds: Imds) -> None:
    host = Host(tmp_path, imds, TOOLS)
    out = host.boot(render())
    assert out.returncode == 1 and "boot failed: python3 is not on this image" in out.stdout
    assert host.shutdowns()[-1] == "-h now"


def test_a_boot_installs_what_the_image_lacks_then_reports_with_the_aws_cli(tmp_path: Path, imds: Imds) -> None:
    host = Host(tmp_path, imds, [*TOOLS, "python3"])
    calls = tmp_path / "aws.log"
    package(host.root, "awscli-2", {"usr/bin/aws": f'#!/bin/sh\necho "$*" >> {calls}\n'})
    package(host.root, "e2fsprogs", {"usr/sbin/mkfs.ext4": "#!/bin/sh\nexit 0\n"})
    # No account id anywhere (not rendered, none in IMDS): the boot gives up at the first step after the installs.
    out = host.boot(render(BUCKET_OWNER=""))
    assert "installed awscli-2 in " in out.stdout and "installed e2fsprogs in " in out.stdout, out.stdout
    assert "boot failed: no account id for the bucket owner" in out.stdout
    assert calls.read_text().splitlines() == [
        f"s3api put-object --bucket b --key p/submissions/s-1/instances/{INSTANCE}.json "
        f"--body {tmp_path}/submitter-boot.json",
        f"autoscaling terminate-instance-in-auto-scaling-group --instance-id {INSTANCE} "
        "--should-decrement-desired-capacity",
    ]
    assert host.shutdowns()[-1] == "-h now" and out.returncode == 1


# ----------------------------------------------------------------------------------------- the warm cache's packages


def _tools(root: Path, calls: Path) -> None:
    package(root, "awscli-2", {"usr/bin/aws": f'#!/bin/sh\necho "$*" >> {calls}\n'})
    package(root, "e2fsprogs", {"usr/sbin/mkfs.ext4": "#!/bin/sh\nexit 0\n"})


def _worker(base: Path, imds: Imds, filesystem: str) -> tuple[Host, Path, dict[str, str | int]]:
    """A worker host whose data volume (a file standing for /dev/sdf) has `filesystem` ("" blank); `mount` records
    its arguments, the work root being the volume's contents. Returns the host, its work root and render values."""
    base.mkdir()
    host = Host(base, imds, [*TOOLS, "python3"])
    device = base / "sdf"
    device.write_text("")
    host.stub("blkid", f"echo {filesystem}" if filesystem else "exit 2")
    host.stub("mountpoint", "exit 1")
    host.stub("mount", f'echo "$*" >> {base}/mount.log')
    return host, base / "mnt" / INSTANCE, {"DATA_DEVICES": f"{base}/missing {device}", "WORK_BASE": str(base / "mnt"),
                                           "BUCKET_OWNER": ""}


def test_a_cache_builder_keeps_the_packages_it_installs_and_a_worker_installs_them_from_its_volume_alone(
        tmp_path: Path, imds: Imds) -> None:
    (tmp_path / "b").mkdir()
    builder = Host(tmp_path / "b", imds, [*TOOLS, "python3"])
    calls, kept = tmp_path / "aws.log", tmp_path / "kept"
    _tools(builder.root, calls)
    out = builder.boot(render(MODE="cache", BUCKET_OWNER="", CACHE_PACKAGES_HOST=str(kept)))
    assert "installed awscli-2 e2fsprogs from their downloaded packages, kept for the warm cache" in out.stdout, \
        out.stdout
    assert sorted(p.name for p in kept.iterdir()) == ["awscli-2.rpm", "e2fsprogs.rpm"]
    assert (builder.root / "usr/bin/aws").is_file()

    # A worker whose repository has nothing: only the volume's packages can give it the AWS CLI.
    worker, work, values = _worker(tmp_path / "w", imds, "ext4")
    shutil.copytree(kept, work / contract.CACHE_PACKAGES)
    out = worker.boot(render(**values))
    assert "installed awscli-2 e2fsprogs from the warm cache's packages in " in out.stdout, out.stdout
    assert (tmp_path / "w/mount.log").read_text() == f"{tmp_path}/w/sdf {work}\n"
    assert "boot failed: no account id for the bucket owner" in out.stdout  # the step after the installs
    assert calls.read_text().startswith("s3api put-object --bucket b ")  # it reported with the installed CLI


def test_a_cache_builder_that_cannot_download_keeps_nothing_and_says_why_it_gives_up(
        tmp_path: Path, imds: Imds) -> None:
    builder = Host(tmp_path, imds, [*TOOLS, "python3"])  # the repository has no awscli-2
    kept = tmp_path / "kept"
    out = builder.boot(render(MODE="cache", CACHE_PACKAGES_HOST=str(kept)))
    assert "could not keep the packages (awscli-2 e2fsprogs) for the warm cache; installing from the repositories" \
        in out.stdout
    assert not kept.exists()
    assert "boot failed: cannot install the AWS CLI: Error: Unable to find a match: awscli-2" in out.stdout
    assert out.returncode == 1 and builder.shutdowns()[-1] == "-h now"


def test_a_worker_whose_volume_packages_do_not_install_uses_the_repositories(tmp_path: Path, imds: Imds) -> None:
    worker, work, values = _worker(tmp_path / "w", imds, "ext4")
    _tools(worker.root, tmp_path / "aws.log")
    (work / contract.CACHE_PACKAGES).mkdir(parents=True)
    (work / contract.CACHE_PACKAGES / "awscli-2.rpm").write_text("not a package")
    out = worker.boot(render(**values))
    assert "the warm cache's packages did not install here; installing from the repositories" in out.stdout
    assert "installed awscli-2 in " in out.stdout, out.stdout


def test_a_worker_on_a_blank_volume_leaves_it_to_the_runtime_and_uses_the_repositories(
        tmp_path: Path, imds: Imds) -> None:
    worker, _, values = _worker(tmp_path / "w", imds, "")
    _tools(worker.root, tmp_path / "aws.log")
    out = worker.boot(render(**values))
    assert "installed awscli-2 in " in out.stdout and "warm cache" not in out.stdout, out.stdout
    assert not (tmp_path / "w/mount.log").exists()  # a blank volume is formatted by the runtime, not mounted here


# ----------------------------------------------------------------------------------------- SigV4


CREDS = {"AccessKeyId": "ASIAEXAMPLEKEY000001", "SecretAccessKey": "c2VjcmV0/example+key", "Token": "tok/en=="}


def _botocore(auth: type[SigV4Auth], service: str, method: str, url: str, body: bytes,
              headers: dict[str, str]) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body,
                         headers={**headers, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    auth(Credentials(CREDS["AccessKeyId"], CREDS["SecretAccessKey"], CREDS["Token"]), service,
         "eu-west-1").add_auth(request)
    return request


@pytest.mark.parametrize("case", ["autoscaling", "s3"])
def test_the_reporters_signature_is_the_one_botocore_computes(case: str) -> None:
    if case == "s3":
        auth, method, headers = S3SigV4Auth, "PUT", {"Content-Type": "application/json",
                                                     "x-amz-expected-bucket-owner": "123456789012"}
        url = boot_report.endpoint("s3", "eu-west-1", "bkt") + "/p/submissions/s-1/instances/i-1.json"
        body = b'{"state": "boot-failed"}\n'
    else:
        auth, method, headers = SigV4Auth, "POST", {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        url = boot_report.endpoint("autoscaling", "eu-west-1") + "/"
        body = b"Action=TerminateInstanceInAutoScalingGroup&Version=2011-01-01&InstanceId=i-1"
    theirs = _botocore(auth, case, method, url, body, headers)
    ours = boot_report.sign(method, url, "eu-west-1", case, body, headers, CREDS, theirs.headers["X-Amz-Date"])
    assert ours["Authorization"] == theirs.headers["Authorization"]
    assert ours["X-Amz-Security-Token"] == CREDS["Token"]


def test_the_reporter_goes_where_the_cli_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert boot_report.endpoint("s3", "us-east-1", "bkt") == "https://bkt.s3.us-east-1.amazonaws.com"
    assert boot_report.endpoint("autoscaling", "cn-north-1") == "https://autoscaling.cn-north-1.amazonaws.com.cn"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/")
    assert boot_report.endpoint("s3", "us-east-1", "bkt") == "http://127.0.0.1:5000/bkt"
    assert boot_report.endpoint("autoscaling", "us-east-1") == "http://127.0.0.1:5000"
    assert os.environ["AWS_ENDPOINT_URL"].endswith("/")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is installed by .ci/run")
def test_the_dnf_standin_is_shellcheck_clean() -> None:
    out = subprocess.run(["shellcheck", "-s", "sh", str(STANDIN)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout


# ----------------------------------------------------------------------------------------- docker's pull streams


def _booted_with(tmp_path: Path, imds: Imds, systemctl: str | None) -> tuple[Host, Path]:
    host = Host(tmp_path, imds, [*TOOLS, "python3"])
    package(host.root, "awscli-2", {"usr/bin/aws": "#!/bin/sh\nexit 0\n"})
    package(host.root, "e2fsprogs", {"usr/sbin/mkfs.ext4": "#!/bin/sh\nexit 0\n"})
    if systemctl is not None:
        host.stub("systemctl", systemctl)
    config = tmp_path / "etc-docker" / "daemon.json"
    config.parent.mkdir()
    config.write_text('{"log-driver": "json-file"}')
    # No account id: the boot gives up at the step after the engine's configuration, before any download.
    out = host.boot(render(BUCKET_OWNER=""), extra_env={"DOCKERD_CONFIG": str(config)})
    assert "boot failed: no account id for the bucket owner" in out.stdout, out.stdout + out.stderr
    return host, config


def test_a_boot_raises_the_engines_concurrent_layer_downloads_and_reloads_it(tmp_path: Path, imds: Imds) -> None:
    calls = tmp_path / "systemctl.log"
    _, config = _booted_with(tmp_path, imds, f'echo "$*" >> {calls}\nexit 0')
    # The file's other settings are kept; the engine is reloaded (SIGHUP), not restarted.
    assert json.loads(config.read_text()) == {"log-driver": "json-file", "max-concurrent-downloads": 10}
    assert calls.read_text().splitlines() == ["is-active --quiet docker", "reload docker"]


def test_a_boot_leaves_an_engine_systemd_does_not_run_alone(tmp_path: Path, imds: Imds) -> None:
    calls = tmp_path / "systemctl.log"
    _, config = _booted_with(tmp_path, imds, f'echo "$*" >> {calls}\nexit 3')  # is-active: inactive
    assert json.loads(config.read_text()) == {"log-driver": "json-file"}
    assert calls.read_text().splitlines() == ["is-active --quiet docker"]
    (tmp_path / "no-systemd").mkdir()
    _, config = _booted_with(tmp_path / "no-systemd", imds, None)  # no systemctl at all (the sandbox's hosts)
    assert json.loads(config.read_text()) == {"log-driver": "json-file"}


def test_a_boot_whose_engine_config_is_not_json_says_so_and_goes_on(tmp_path: Path, imds: Imds) -> None:
    calls = tmp_path / "systemctl.log"
    host = Host(tmp_path, imds, [*TOOLS, "python3"])
    package(host.root, "awscli-2", {"usr/bin/aws": "#!/bin/sh\nexit 0\n"})
    package(host.root, "e2fsprogs", {"usr/sbin/mkfs.ext4": "#!/bin/sh\nexit 0\n"})
    host.stub("systemctl", f'echo "$*" >> {calls}\nexit 0')
    config = tmp_path / "daemon.json"
    config.write_text("{not json")
    out = host.boot(render(BUCKET_OWNER=""), extra_env={"DOCKERD_CONFIG": str(config)})
    assert "docker: could not set 10 concurrent layer downloads; pulling with docker's default" in out.stdout
    assert "boot failed: no account id for the bucket owner" in out.stdout  # the boot went on past it
    assert config.read_text() == "{not json" and "reload docker" not in calls.read_text()
