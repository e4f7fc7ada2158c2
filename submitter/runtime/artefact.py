"""The instance runtime as one artefact, and what points the hosts at it: a zipapp of `submitter.contract`
and the on-instance modules of `submitter.runtime`, built byte-for-byte reproducibly so the copy staged in S3
(and checked by its SHA-256 on the host) is the one tested; the boot script (user-data) and the Batch job
definition's command that fetch, verify and run it.

Interface used by the submit side: `build()`, `sha256()`, `user_data(values)`, `batch_command()`.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import zipfile
from functools import lru_cache
from importlib import resources

from submitter import contract
from submitter.errors import UsageError

SHEBANG = b"#!/usr/bin/env python3\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest time: no build time leaks into the bytes
_MAIN = b"import sys\nfrom submitter.runtime.entry import main\nsys.exit(main(sys.argv[1:]))\n"
SUBMIT_SIDE = ("artefact.py",)  # this module runs where `submit` runs, never on the instance
USER_DATA_LIMIT = 16 * 1024  # EC2 rejects larger user-data (before base64)


def _sources() -> list[tuple[str, bytes]]:
    root = resources.files("submitter")
    files = [("submitter/__init__.py", b"")]
    for item in sorted(root.joinpath("contract").iterdir(), key=lambda p: p.name):
        if item.name.endswith(".py"):
            files.append((f"submitter/contract/{item.name}", item.read_bytes()))
    runtime = root.joinpath("runtime")
    for item in sorted(runtime.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".py") and item.name not in SUBMIT_SIDE:
            files.append((f"submitter/runtime/{item.name}", item.read_bytes()))
    return [("__main__.py", _MAIN), *files]


@lru_cache(maxsize=1)
def build() -> bytes:
    """The artefact's bytes: the same for the same sources, whenever and wherever it is built."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in _sources():
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=9)
    return SHEBANG + buffer.getvalue()


def sha256() -> str:
    return hashlib.sha256(build()).hexdigest()


# ----------------------------------------------------------------------------------------- the boot script


def template() -> str:
    """boot.sh as it is sent: without its comment lines (they document the source; EC2 takes 16 KB of user-data)
    but for shellcheck's directives. The shebang stays; no line of the script's own strings starts with `#`."""
    lines = resources.files(__package__).joinpath("boot.sh").read_text(encoding="utf-8").splitlines(keepends=True)
    return lines[0] + "".join(line for line in lines[1:]
                              if not line.lstrip().startswith("#") or line.lstrip().startswith("# shellcheck "))


def boot_report_source() -> str:
    """boot_report.py, which the boot script runs with `python3 -c` when the host has no AWS CLI to report with."""
    return resources.files(__package__).joinpath("boot_report.py").read_text(encoding="utf-8")


def user_data(values: dict[str, str | int]) -> str:
    """The boot script with every {{NAME}} replaced by its shell-quoted value; checked against EC2's limit.

    `values` holds SUBMISSION, BUCKET, PREFIX, GROUP, DEADMAN_MINUTES, RUNTIME_SHA256 and BUCKET_OWNER (the
    account id, "" when unknown); where the runtime and the instance reports are in S3 comes from contract.Layout.
    """
    values = dict(values)
    if {"SUBMISSION", "BUCKET", "PREFIX"} <= set(values):
        layout, sub, bucket = contract.Layout(str(values["PREFIX"])), str(values["SUBMISSION"]), str(values["BUCKET"])
        values.setdefault("RUNTIME_URI", layout.uri(bucket, layout.runtime(sub)))
        values.setdefault("REPORTS_URI", layout.uri(bucket, layout.instances(sub)))
    values.setdefault("BOOT_FAILED", contract.BOOT_FAILED)
    values.setdefault("BOOT_REPORT", boot_report_source())
    values.setdefault("BUCKET_OWNER", "")  # unknown: the host reads its own account from IMDS instead
    values.setdefault("EXIT_RETRY", contract.EXIT_RETRY)
    values.setdefault("CACHE_PACKAGES_HOST", contract.CACHE_PACKAGES_HOST)
    values.setdefault("CACHE_PACKAGES", contract.CACHE_PACKAGES)
    values.setdefault("DATA_DEVICES", " ".join(contract.DATA_DEVICES))
    values.setdefault("WORK_BASE", contract.WORK_BASE)
    values.setdefault("MODE", "agent")  # "cache": the instance `submitter cache` launches (runtime/cache.py)
    text = template()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", shlex.quote(str(value)))
    if "{{" in text:
        missing = text[text.index("{{"):].split("}}")[0] + "}}"
        raise ValueError(f"boot script value {missing} was not given")
    check_size(text)
    return text


def check_size(text: str) -> None:
    size = len(text.encode("utf-8"))
    if size > USER_DATA_LIMIT:
        raise UsageError(
            "boot script",
            f"the rendered user-data is {size} bytes; EC2 accepts at most {USER_DATA_LIMIT} bytes",
            "shorten the values that go into it (job name, bucket, prefix)",
        )


# ----------------------------------------------------------------------------------------- AWS Batch

RUNTIME_SHA256_ENV = "SUBMITTER_RUNTIME_SHA256"  # the job definition carries the runtime's hash in this variable

# Runs in the user's image: fetch the runtime with boto3, else the AWS CLI, check its hash, then become the
# wrapper. Batch has no entryPoint override, so the image must not set ENTRYPOINT (or it must `exec "$@"`).
# The key is contract.Layout's, with the submission id and prefix left to the job's environment.
_BATCH_SCRIPT = """\
set -u
d=$(mktemp -d)
key="${SUBMITTER_PREFIX:+${SUBMITTER_PREFIX%/}/}@REL@"
if python3 -c 'import boto3' 2>/dev/null; then
  python3 -c 'import boto3, os, sys
owner = os.environ.get("SUBMITTER_BUCKET_OWNER")
boto3.client("s3").download_file(os.environ["SUBMITTER_BUCKET"], sys.argv[1], sys.argv[2],
                                 ExtraArgs={"ExpectedBucketOwner": owner} if owner else None)' "$key" "$d/@NAME@" \\
    || { echo "submitter: could not fetch the runtime from S3 with boto3"; exit 64; }
elif command -v aws >/dev/null 2>&1; then
  aws s3 cp --only-show-errors "s3://$SUBMITTER_BUCKET/$key" "$d/@NAME@" \\
    || { echo "submitter: could not fetch the runtime from S3 with the AWS CLI"; exit 64; }
else
  echo "submitter: the image needs python3 with boto3, or the AWS CLI, for the batch backend (docs/batch.md)"
  exit 64
fi
python3 -c 'import hashlib, os, sys
if hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest() != os.environ.get("@ENV@"):
    sys.exit("submitter: the runtime in S3 is not the one this job was defined with (SHA-256 mismatch)")' \\
  "$d/@NAME@" || exit 64
exec python3 "$d/@NAME@" batch
"""


def batch_command() -> list[str]:
    """The Batch job definition's command; the definition's environment must carry RUNTIME_SHA256_ENV."""
    rel = contract.Layout("").runtime("${SUBMITTER_SUBMISSION_ID}")
    script = (_BATCH_SCRIPT.replace("@REL@", rel).replace("@NAME@", contract.RUNTIME_ARTEFACT)
              .replace("@ENV@", RUNTIME_SHA256_ENV))
    return ["/bin/sh", "-c", script]
