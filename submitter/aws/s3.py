"""S3 adapter: JSON documents, uploads, listings and downloads under the bucket."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from submitter.aws.errors import translate

if TYPE_CHECKING:
    from submitter.aws.session import Aws


class S3:
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def connect(cls, aws: Aws, bucket: str) -> S3:
        return cls(aws.client("s3"), bucket)

    def put_json(self, key: str, value: Any) -> None:
        body = json.dumps(value, indent=2, sort_keys=True, default=str).encode()
        with translate("s3", "PutObject"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    def put_bytes(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        with translate("s3", "PutObject"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def get_json(self, key: str) -> Any | None:
        body = self.get_bytes(key)
        return None if body is None else json.loads(body)

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            with translate("s3", "GetObject"):
                raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            with translate("s3", "HeadObject"):
                raise
        return True

    def upload_file(self, path: str, key: str) -> None:
        with translate("s3", "PutObject"):
            self.client.upload_file(path, self.bucket, key)

    def objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        with translate("s3", "ListObjectsV2"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    def prefixes(self, prefix: str) -> list[str]:
        """The 'directories' right below `prefix` (which ends with /)."""
        found: list[str] = []
        with translate("s3", "ListObjectsV2"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                found += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return found

    def download(self, key: str, path: str) -> None:
        with translate("s3", "GetObject"):
            self.client.download_file(self.bucket, key, path)

    def append_range(self, key: str, path: str, start: int, on_bytes: Callable[[int], None] | None = None) -> None:
        """Append the object's bytes from offset `start` to the file at `path` (resumes a partial download)."""
        with translate("s3", "GetObject"):
            extra = {"Range": f"bytes={start}-"} if start else {}
            body = self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
            with open(path, "ab" if start else "wb") as sink:
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    sink.write(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))


# ------------------------------------------------------------------------------------------ the bucket itself
# Used by `submitter init`: each reader returns the setting as S3 reports it (None: not set), so the caller
# can compare it with what it wants and change only what differs.


def client(aws: Aws) -> Any:
    return aws.client("s3")


def bucket_state(client: Any, bucket: str) -> str:
    """'missing', 'ours' (exists and we can reach it) or 'foreign' (exists, owned by someone else)."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return "missing"
        if code in ("403", "AccessDenied"):
            return "foreign"
        with translate("s3", "HeadBucket"):
            raise
    return "ours"


def bucket_problem(client: Any, bucket: str) -> str | None:
    """Why the bucket cannot be used ('missing' or S3's error code), or None when it can."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        return "missing" if code in ("404", "NoSuchBucket", "NotFound") else code
    return None


def create_bucket(client: Any, bucket: str, region: str, tags: dict[str, str]) -> None:
    with translate("s3", "CreateBucket", "pick another name with SUBMITTER_BUCKET (bucket names are global)"):
        if region == "us-east-1":
            client.create_bucket(Bucket=bucket, ObjectOwnership="BucketOwnerEnforced")
        else:
            client.create_bucket(Bucket=bucket, ObjectOwnership="BucketOwnerEnforced",
                                 CreateBucketConfiguration={"LocationConstraint": region})
    with translate("s3", "PutBucketTagging"):
        client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})


def _read(call: Any, missing: tuple[str, ...], operation: str) -> Any:
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in missing:
            return None
        with translate("s3", operation):
            raise


def public_access_block(client: Any, bucket: str) -> dict[str, Any] | None:
    out = _read(lambda: client.get_public_access_block(Bucket=bucket),
                ("NoSuchPublicAccessBlockConfiguration",), "GetPublicAccessBlock")
    return None if out is None else dict(out["PublicAccessBlockConfiguration"])


def put_public_access_block(client: Any, bucket: str, config: dict[str, Any]) -> None:
    with translate("s3", "PutPublicAccessBlock"):
        client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=config)


def encryption(client: Any, bucket: str) -> list[dict[str, Any]] | None:
    out = _read(lambda: client.get_bucket_encryption(Bucket=bucket),
                ("ServerSideEncryptionConfigurationNotFoundError",), "GetBucketEncryption")
    return None if out is None else list(out["ServerSideEncryptionConfiguration"]["Rules"])


def put_encryption(client: Any, bucket: str, rules: list[dict[str, Any]]) -> None:
    with translate("s3", "PutBucketEncryption"):
        client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})


def lifecycle(client: Any, bucket: str) -> list[dict[str, Any]] | None:
    out = _read(lambda: client.get_bucket_lifecycle_configuration(Bucket=bucket),
                ("NoSuchLifecycleConfiguration",), "GetBucketLifecycleConfiguration")
    return None if out is None else list(out["Rules"])


def put_lifecycle(client: Any, bucket: str, rules: list[dict[str, Any]]) -> None:
    with translate("s3", "PutBucketLifecycleConfiguration"):
        client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})


def policy(client: Any, bucket: str) -> dict[str, Any] | None:
    import json

    out = _read(lambda: client.get_bucket_policy(Bucket=bucket), ("NoSuchBucketPolicy",), "GetBucketPolicy")
    return None if out is None else dict(json.loads(out["Policy"]))


def put_policy(client: Any, bucket: str, document: dict[str, Any]) -> None:
    import json

    with translate("s3", "PutBucketPolicy"):
        client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(document))
