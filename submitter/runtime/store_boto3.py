"""The store interface through boto3, for Batch images that have boto3 but no AWS CLI. Imported only when
boto3 is there (store.connect): the runtime itself requires no third-party package."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped,unused-ignore]
from botocore.exceptions import ClientError  # type: ignore[import-untyped,unused-ignore]

from submitter.runtime.commands import Result
from submitter.runtime.files import download_targets, open_below, scan
from submitter.runtime.rules import parse_spot_price
from submitter.runtime.store import Store

log = logging.getLogger("submitter.runtime")


class Boto3Store(Store):
    def __init__(self, region: str, bucket: str, owner: str = "") -> None:
        self.region, self.bucket = region, bucket
        self.s3 = boto3.client("s3", region_name=region)
        if owner:  # a hook, so every request (managed transfers' too) names the owner, as on the submit side
            self.s3.meta.events.register("before-parameter-build.s3", _expect_owner(bucket, owner))

    def _client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None

    def put_bytes(self, key: str, data: bytes, content_type: str = "text/plain") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found += [str(o["Key"]) for o in page.get("Contents", [])]
        return found

    def upload_file(self, path: Path, key: str) -> None:
        self.s3.upload_file(str(path), self.bucket, key)

    def download(self, uri: str, dest: Path, kind: str) -> int:
        bucket, _, key = uri[len("s3://"):].partition("/")
        if kind == "file":
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(bucket, key, str(dest))
            return 1
        dest.mkdir(parents=True, exist_ok=True)
        prefix = key if key.endswith("/") or not key else key + "/"
        keys = [str(item["Key"]) for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix) for item in page.get("Contents", [])]
        targets = download_targets(prefix, keys, dest, uri)  # keys that would leave `dest` are refused, logged
        for name, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(bucket, name, str(target))
        return len(targets)

    def upload_tree(self, local: Path, prefix: str, seen: dict[str, tuple[int, int]]) -> None:
        self.skip_links(local, prefix, seen)
        for name in scan(local)[0]:
            try:
                # Opened segment by segment without following links: a link the job swaps in after the scan
                # fails here instead of uploading what it points to.
                handle = os.fdopen(open_below(local, name), "rb")
            except OSError as exc:
                log.warning("%s: skipped %s (%s)", self.uri(prefix), name, exc)
                continue
            with handle:
                info = os.fstat(handle.fileno())
                if seen.get(name) == (info.st_size, info.st_mtime_ns):
                    continue
                self.s3.upload_fileobj(handle, self.bucket, prefix.rstrip("/") + "/" + name)
            seen[name] = (info.st_size, info.st_mtime_ns)

    def parameters(self, names: list[str]) -> list[tuple[str, str]]:
        answer = self._client("ssm").get_parameters(Names=names, WithDecryption=True)
        return [(str(p["Name"]), str(p["Value"])) for p in answer.get("Parameters", [])]

    def spot_price(self, instance_type: str, zone: str) -> float | None:
        answer = self._client("ec2").describe_spot_price_history(
            InstanceTypes=[instance_type], AvailabilityZone=zone, ProductDescriptions=["Linux/UNIX"], MaxResults=1)
        history = [{"SpotPrice": h["SpotPrice"], "Timestamp": str(h["Timestamp"])} for h in answer["SpotPriceHistory"]]
        return parse_spot_price({"SpotPriceHistory": history})

    def registry_password(self) -> Result:
        import base64

        try:
            token = self._client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
        except ClientError as exc:
            return Result(1, "", str(exc))
        return Result(0, base64.b64decode(token).decode().split(":", 1)[1], "")

    def queue_url(self, name: str) -> str:
        return str(self._client("sqs").get_queue_url(QueueName=name)["QueueUrl"])

    def receive(self, queue_url: str, wait: int, visibility: int) -> list[dict[str, Any]]:
        answer = self._client("sqs").receive_message(
            QueueUrl=queue_url, WaitTimeSeconds=wait, MaxNumberOfMessages=1, VisibilityTimeout=visibility,
            AttributeNames=["ApproximateReceiveCount"])
        return list(answer.get("Messages") or [])

    def change_visibility(self, queue_url: str, receipt: str, seconds: int) -> None:
        self._client("sqs").change_message_visibility(QueueUrl=queue_url, ReceiptHandle=receipt,
                                                      VisibilityTimeout=seconds)

    def delete_message(self, queue_url: str, receipt: str) -> None:
        self._client("sqs").delete_message(QueueUrl=queue_url, ReceiptHandle=receipt)

    def visible_messages(self, queue_url: str) -> int:
        answer = self._client("sqs").get_queue_attributes(QueueUrl=queue_url,
                                                          AttributeNames=["ApproximateNumberOfMessages"])
        return int(answer.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    def detach(self, group: str, instance_id: str, decrement: bool) -> None:
        self._client("autoscaling").detach_instances(AutoScalingGroupName=group, InstanceIds=[instance_id],
                                                     ShouldDecrementDesiredCapacity=decrement)

    def tag_instance(self, instance_id: str, key: str, value: str) -> None:
        self._client("ec2").create_tags(Resources=[instance_id], Tags=[{"Key": key, "Value": value}])


def _expect_owner(bucket: str, owner: str) -> Any:
    """Requests to `bucket` carry ExpectedBucketOwner: S3 answers 403 when another account owns the name."""
    def add(params: dict[str, Any], model: Any, **_: Any) -> None:
        members = model.input_shape.members if model.input_shape is not None else {}
        if params.get("Bucket") == bucket and "ExpectedBucketOwner" in members:
            params.setdefault("ExpectedBucketOwner", owner)
    return add
