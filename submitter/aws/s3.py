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
        return cls(client(aws, bucket), bucket)

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

    def get_bytes(self, key: str, limit: int | None = None) -> bytes | None:
        """The object's bytes (at most its first `limit`: a ranged GET), None when there is no such object."""
        from botocore.exceptions import ClientError

        ranged = {"Range": f"bytes=0-{limit - 1}"} if limit else {}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **ranged)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                return None
            # S3 answers a range of an empty object with 416 InvalidRange (RFC 7233 4.4; minio/minio#6557 and
            # minio/minio-java#638 compared it with AWS): the object is there, and empty.
            if ranged and code == "InvalidRange":
                return b""
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

    def delete(self, key: str) -> None:
        with translate("s3", "DeleteObject"):
            self.client.delete_object(Bucket=self.bucket, Key=key)

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


def client(aws: Aws, bucket: str | None = None) -> Any:
    """The S3 client; every request to the settings' bucket (and to `bucket`) names the caller's account as
    its expected owner."""
    s3 = aws.client("s3")
    for name in {aws.bucket, bucket} - {None}:
        assert name is not None
        # unique_id: asking again for the same bucket does not add a second hook
        s3.meta.events.register("before-parameter-build.s3", _ExpectOwner(aws, name),
                                unique_id=f"submitter-expected-owner:{name}")
    return s3


class _ExpectOwner:
    """S3 finds a bucket by its global name alone: one deleted and re-created by another account, or a
    SUBMITTER_BUCKET naming someone else's, would take our documents and serve forged ones. So every request to
    our bucket carries ExpectedBucketOwner (S3 answers 403 for any other owner). A hook on the client, not an
    argument at each call, so no call (nor a managed transfer's HeadObject or UploadPart) can go without it.
    The account is asked for at the first request, so making a client costs nothing."""

    def __init__(self, aws: Aws, bucket: str) -> None:
        self.aws, self.bucket = aws, bucket

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        members = model.input_shape.members if model.input_shape is not None else {}
        if params.get("Bucket") == self.bucket and "ExpectedBucketOwner" in members:
            params.setdefault("ExpectedBucketOwner", self.aws.account())
        if "ExpectedSourceBucketOwner" in members and _source_bucket(params.get("CopySource")) == self.bucket:
            params.setdefault("ExpectedSourceBucketOwner", self.aws.account())


def _source_bucket(source: Any) -> str | None:
    if isinstance(source, dict):
        return str(source.get("Bucket"))
    return str(source).lstrip("/").split("/", 1)[0] if source else None


def _listed(client: Any, bucket: str) -> bool | None:
    """Whether ListBuckets (the caller's own buckets only) names `bucket`; None when the caller may not list.

    On AWS the owner header already refuses another account's bucket; this second look also holds where the
    header is ignored (moto, some S3-compatible stores), and needs no permission the header check does not."""
    from botocore.exceptions import ClientError

    try:
        found = client.list_buckets(Prefix=bucket).get("Buckets", [])
    except ClientError:
        return None
    return any(b.get("Name") == bucket for b in found)


def bucket_state(client: Any, bucket: str) -> str:
    """'missing', 'ours' (exists, in the caller's account) or 'foreign' (exists: another account's, or one this
    identity may not use). `client` comes from `client(aws, bucket)`, so HeadBucket names the expected owner."""
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
    return "foreign" if _listed(client, bucket) is False else "ours"


def bucket_problem(client: Any, bucket: str) -> str | None:
    """Why the bucket cannot be used ('missing', 'foreign' or S3's error code), or None when it can."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("403", "AccessDenied"):
            return "foreign"
        return "missing" if code in ("404", "NoSuchBucket", "NotFound") else code
    return "foreign" if _listed(client, bucket) is False else None


def owned_buckets(client: Any, prefix: str) -> list[str]:
    """The caller's own buckets whose names start with `prefix` ([] when the caller may not list them)."""
    from botocore.exceptions import ClientError

    try:
        found = client.list_buckets(Prefix=prefix).get("Buckets", [])
    except ClientError:
        return []
    return sorted(str(b["Name"]) for b in found if str(b.get("Name", "")).startswith(prefix))


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


# ------------------------------------------------------------------------------------------ pinning a source


def pin(s3_client: Any, uri: str) -> dict[str, Any]:
    """What an `s3://` input is now, to tell later whether it changed: one object's ETag, version id (when the
    bucket is versioned) and size; a prefix's object count and a SHA-256 over its keys, ETags and sizes.
    Raises AwsError when the source cannot be read (missing, or this identity may not read it)."""
    import hashlib

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if key and not key.endswith("/"):
        with translate("s3", "HeadObject"):
            head = s3_client.head_object(Bucket=bucket, Key=key)
        return {"etag": str(head.get("ETag", "")).strip('"'), "version_id": head.get("VersionId"),
                "size": int(head.get("ContentLength", 0))}
    digest, count = hashlib.sha256(), 0
    with translate("s3", "ListObjectsV2"):
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):  # listed in key order, so the digest is stable
                line = f"{item['Key'][len(key):]}\0{str(item.get('ETag', '')).strip(chr(34))}\0{item.get('Size', 0)}\n"
                digest.update(line.encode())
                count += 1
    return {"objects": count, "listing_sha256": digest.hexdigest()}
