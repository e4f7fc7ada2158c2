"""The one store interface the runtime uses for S3, SQS, SSM, ECR and EC2, and its implementation through
the `aws` CLI: the instance role's credentials and the standard endpoint variables (all the sandbox changes)
apply without any code here. `connect()` picks boto3 instead when the image has it and no CLI (Batch)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from submitter.runtime.commands import CommandError, Result, not_found, parse_json, run
from submitter.runtime.files import download_targets, skip_links, snapshot
from submitter.runtime.rules import parse_spot_price

log = logging.getLogger("submitter.runtime")

GET_PARAMETERS_MAX = 10  # SSM GetParameters takes at most 10 names
LINK = (-1, -1)  # upload_tree's `seen` mark of a symbolic link already named in the log (no file has size -1)


class Store:
    """What the runtime reads and writes. Keys are whole keys (contract.Layout), without the bucket."""

    bucket = ""

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # S3
    def get_bytes(self, key: str) -> bytes | None:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes, content_type: str = "text/plain") -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def keys(self, prefix: str) -> list[str]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove object `key`: the instance role may delete only its runs' old checkpoint generations
        (runtime/checkpoints.py), their older ledger entries (runtime/ledger.py) and superseded run index entries
        (runtime/index.py)."""
        raise NotImplementedError

    def fetch(self, key: str, path: Path) -> bool:
        """Object `key` into file `path`; False (and no file) when there is no such object."""
        data = self.get_bytes(key)
        if data is None:
            return False
        path.write_bytes(data)
        return True

    def upload_file(self, path: Path, key: str) -> None:
        self.put_bytes(key, path.read_bytes())

    def download(self, uri: str, dest: Path, kind: str) -> int:
        """s3://bucket/key (kind file) or s3://bucket/prefix/ (kind dir) to `dest`; returns the files there."""
        raise NotImplementedError

    def upload_tree(self, local: Path, prefix: str, seen: dict[str, tuple[int, int]]) -> None:
        """The files of `local` under `prefix`: at least those new or changed since the last call with `seen`.
        Symbolic links are never followed nor uploaded: each is skipped and named once in the run's log
        (files.skip_links), so a link to `/` costs nothing and nothing of the host leaves through one."""
        raise NotImplementedError

    def skip_links(self, local: Path, prefix: str, seen: dict[str, tuple[int, int]]) -> None:
        """Name the links below `local` in the run's log, once per `seen` (they are kept there as LINK)."""
        told = {name for name, mark in seen.items() if mark == LINK}
        for name in skip_links(local, self.uri(prefix), told):
            seen[name] = LINK

    def read_json(self, key: str) -> Any:
        """The JSON document at `key`, None when there is none."""
        data = self.get_bytes(key)
        return None if data is None else parse_json(data.decode())

    def put_json(self, key: str, doc: Any) -> None:
        self.put_bytes(key, json.dumps(doc, indent=2).encode() + b"\n", "application/json")

    # SSM, EC2, ECR
    def secrets(self, names: list[str], ssm_prefix: str) -> dict[str, str]:
        """The values of `names` under `ssm_prefix`; every one must exist."""
        prefix = "/" + ssm_prefix.strip("/") + "/"
        values: dict[str, str] = {}
        for start in range(0, len(names), GET_PARAMETERS_MAX):
            for name, value in self.parameters([prefix + n for n in names[start:start + GET_PARAMETERS_MAX]]):
                values[name[len(prefix):]] = value
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"secret(s) {', '.join(missing)} not found in SSM under {prefix}")
        return values

    def parameters(self, names: list[str]) -> list[tuple[str, str]]:
        """(name, decrypted value) of the SSM parameters that exist among `names`."""
        raise NotImplementedError

    def spot_price(self, instance_type: str, zone: str) -> float | None:
        raise NotImplementedError

    def registry_password(self) -> Result:
        """`aws ecr get-login-password`'s answer: the registry token of the instance role."""
        raise NotImplementedError

    # STS
    def assume_role(self, role_arn: str, session: str, seconds: int) -> dict[str, str]:
        """Credentials of `role_arn` as the container-credentials endpoint serves them:
        {AccessKeyId, SecretAccessKey, Token, Expiration (ISO 8601 UTC)}."""
        raise NotImplementedError

    # SQS
    def queue_url(self, name: str) -> str:
        raise NotImplementedError

    def receive(self, queue_url: str, wait: int, visibility: int) -> list[dict[str, Any]]:
        """At most one message: {"Body", "ReceiptHandle", "Attributes"}."""
        raise NotImplementedError

    def change_visibility(self, queue_url: str, receipt: str, seconds: int) -> None:
        raise NotImplementedError

    def delete_message(self, queue_url: str, receipt: str) -> None:
        raise NotImplementedError

    def visible_messages(self, queue_url: str) -> int:
        """About how many runs wait on the queue (SQS's ApproximateNumberOfMessages)."""
        raise NotImplementedError

    # A kept instance (runtime/keep.py)
    def detach(self, group: str, instance_id: str, decrement: bool) -> None:
        """Take this instance out of its Auto Scaling group; without `decrement` the group starts a replacement."""
        raise NotImplementedError

    def tag_instance(self, instance_id: str, key: str, value: str) -> None:
        raise NotImplementedError


class CliStore(Store):
    """The store through the `aws` CLI, in the given region."""

    def __init__(self, region: str, bucket: str, owner: str = "") -> None:
        self.region, self.bucket = region, bucket
        self.owner = owner  # the bucket's account id; "" leaves the owner unchecked (an older boot script)

    def owned(self, args: tuple[str, ...]) -> tuple[str, ...]:
        """An s3api call on our bucket names its owner: S3 answers 403 when another account owns the name. The
        high-level `aws s3 cp/sync` take no such option (CLI v1 or v2); docs/decisions.md says what covers them."""
        if args[0] != "s3api" or not self.owner or "--expected-bucket-owner" in args or "--bucket" not in args:
            return args
        at = args.index("--bucket")
        return (*args, "--expected-bucket-owner", self.owner) if args[at + 1:at + 2] == (self.bucket,) else args

    def aws(self, *args: str, input: bytes | None = None, timeout: float | None = 300,  # noqa: A002
            check: bool = True) -> Result:
        args = self.owned(args)
        endpoint: list[str] = []
        custom = os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
        if args[0] == "sqs" and custom:
            # AWS CLI v1 pins SQS to its legacy queue.amazonaws.com names and ignores the standard variable
            # (CLI v2 honours it); an explicit --endpoint-url is what both obey. Unset on AWS: no change there.
            endpoint = ["--endpoint-url", custom]
        result = run(["aws", "--region", self.region, "--output", "json", *endpoint, *args], input=input,
                     timeout=timeout)
        if check and result.code != 0:
            raise CommandError(f"aws {' '.join(args[:2])}", result)
        return result

    def get_bytes(self, key: str) -> bytes | None:
        result = self.aws("s3", "cp", "--only-show-errors", self.uri(key), "-", check=False)
        if result.code != 0:
            if not_found(result):
                return None
            raise CommandError(f"reading {self.uri(key)}", result)
        return result.out.encode()

    def put_bytes(self, key: str, data: bytes, content_type: str = "text/plain") -> None:
        self.aws("s3", "cp", "--only-show-errors", "--content-type", content_type, "-", self.uri(key), input=data)

    def exists(self, key: str) -> bool:
        result = self.aws("s3api", "head-object", "--bucket", self.bucket, "--key", key, check=False, timeout=60)
        if result.code != 0 and not not_found(result):
            log.warning("could not look for %s: %s", self.uri(key), result.last_line())
        return result.code == 0

    def delete(self, key: str) -> None:
        self.aws("s3api", "delete-object", "--bucket", self.bucket, "--key", key, timeout=60)

    def keys(self, prefix: str) -> list[str]:
        answer = parse_json(self.aws("s3api", "list-objects-v2", "--bucket", self.bucket, "--prefix", prefix).out)
        return [str(item["Key"]) for item in answer.get("Contents") or []]

    def fetch(self, key: str, path: Path) -> bool:
        return self.aws("s3", "cp", "--only-show-errors", self.uri(key), str(path), check=False).code == 0

    def upload_file(self, path: Path, key: str) -> None:
        self.aws("s3", "cp", "--only-show-errors", str(path), self.uri(key))

    def download(self, uri: str, dest: Path, kind: str) -> int:
        if kind == "file":
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.aws("s3", "cp", "--only-show-errors", uri, str(dest), timeout=None)
            return 1
        dest.mkdir(parents=True, exist_ok=True)
        bucket, _, key = uri[len("s3://"):].partition("/")
        prefix = key if key.endswith("/") or not key else key + "/"
        listed = parse_json(self.aws("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", prefix,
                                     timeout=None).out)
        keys = [str(item["Key"]) for item in listed.get("Contents") or []]
        targets = download_targets(prefix, keys, dest, uri)
        if len(targets) == len([k for k in keys if not k.endswith("/")]):
            # Every key is safe: one recursive copy, as fast as the CLI goes.
            self.aws("s3", "cp", "--recursive", "--only-show-errors", uri, str(dest), timeout=None)
        else:  # some were refused (and logged): only the others, one by one
            for name, path in targets:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.aws("s3", "cp", "--only-show-errors", f"s3://{bucket}/{name}", str(path), timeout=None)
        return sum(1 for p in dest.rglob("*") if p.is_file())

    def upload_tree(self, local: Path, prefix: str, seen: dict[str, tuple[int, int]]) -> None:
        self.skip_links(local, prefix, seen)
        if not local.is_dir() or local.is_symlink():
            return
        # sync compares size and time itself (`seen` only remembers the links named); --no-follow-symlinks
        # skips a link to a file or a directory alike, without entering it (awscli's FileGenerator). It reads
        # a hard-linked snapshot, not the tree the job may still be changing (files.snapshot).
        snap = snapshot(local)
        try:
            self.aws("s3", "sync", "--only-show-errors", "--no-follow-symlinks", str(snap or local),
                     self.uri(prefix), timeout=None)
        finally:
            if snap is not None:
                shutil.rmtree(snap, ignore_errors=True)

    def parameters(self, names: list[str]) -> list[tuple[str, str]]:
        answer = parse_json(self.aws("ssm", "get-parameters", "--with-decryption", "--names", *names).out)
        return [(str(p["Name"]), str(p["Value"])) for p in answer.get("Parameters") or []]

    def spot_price(self, instance_type: str, zone: str) -> float | None:
        from submitter.contract import iso

        result = self.aws("ec2", "describe-spot-price-history", "--instance-types", instance_type,
                          "--availability-zone", zone, "--product-descriptions", "Linux/UNIX",
                          "--start-time", iso(), "--max-items", "1", check=False, timeout=60)
        if result.code != 0:
            raise CommandError("aws ec2 describe-spot-price-history", result)
        return parse_spot_price(parse_json(result.out))

    def registry_password(self) -> Result:
        return self.aws("ecr", "get-login-password", check=False, timeout=60)

    def assume_role(self, role_arn: str, session: str, seconds: int) -> dict[str, str]:
        answer = parse_json(self.aws("sts", "assume-role", "--role-arn", role_arn, "--role-session-name", session,
                                     "--duration-seconds", str(seconds), timeout=60).out)
        creds = answer["Credentials"]
        return {"AccessKeyId": str(creds["AccessKeyId"]), "SecretAccessKey": str(creds["SecretAccessKey"]),
                "Token": str(creds["SessionToken"]), "Expiration": iso_utc(str(creds["Expiration"]))}

    def queue_url(self, name: str) -> str:
        return str(parse_json(self.aws("sqs", "get-queue-url", "--queue-name", name).out)["QueueUrl"])

    def receive(self, queue_url: str, wait: int, visibility: int) -> list[dict[str, Any]]:
        answer = parse_json(self.aws(
            "sqs", "receive-message", "--queue-url", queue_url, "--wait-time-seconds", str(wait),
            "--max-number-of-messages", "1", "--attribute-names", "ApproximateReceiveCount",
            "--visibility-timeout", str(visibility), timeout=wait + 40).out)
        return list(answer.get("Messages") or [])

    def change_visibility(self, queue_url: str, receipt: str, seconds: int) -> None:
        self.aws("sqs", "change-message-visibility", "--queue-url", queue_url, "--receipt-handle", receipt,
                 "--visibility-timeout", str(seconds), timeout=60)

    def delete_message(self, queue_url: str, receipt: str) -> None:
        self.aws("sqs", "delete-message", "--queue-url", queue_url, "--receipt-handle", receipt, timeout=60)

    def visible_messages(self, queue_url: str) -> int:
        answer = parse_json(self.aws("sqs", "get-queue-attributes", "--queue-url", queue_url, "--attribute-names",
                                     "ApproximateNumberOfMessages", timeout=60).out)
        return int((answer.get("Attributes") or {}).get("ApproximateNumberOfMessages", 0))

    def detach(self, group: str, instance_id: str, decrement: bool) -> None:
        self.aws("autoscaling", "detach-instances", "--auto-scaling-group-name", group, "--instance-ids", instance_id,
                 "--should-decrement-desired-capacity" if decrement else "--no-should-decrement-desired-capacity",
                 timeout=60)

    def tag_instance(self, instance_id: str, key: str, value: str) -> None:
        self.aws("ec2", "create-tags", "--resources", instance_id, "--tags", f"Key={key},Value={value}", timeout=60)


def iso_utc(text: str) -> str:
    """The CLI's `...+00:00` (or already `...Z`) as `YYYY-mm-ddTHH:MM:SSZ`, the form every SDK parses."""
    from datetime import datetime, timezone

    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def connect(region: str, bucket: str, owner: str = "") -> Store:
    """boto3's store when the image has boto3, else the CLI's (docs/batch.md: a Batch image needs one)."""
    import importlib.util

    if importlib.util.find_spec("boto3") is None:  # only looked for: the runtime needs no third-party package
        return CliStore(region, bucket, owner)
    from submitter.runtime.store_boto3 import Boto3Store

    return Boto3Store(region, bucket, owner)
