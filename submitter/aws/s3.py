"""S3 adapter: JSON documents, uploads, listings and downloads under the bucket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from submitter.aws.errors import translate


class S3:
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

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
