"""One moto S3 bucket with the settings that point the CLI at it: what the tracking, compare, report and status
tests share (each passes its own bucket name, so parallel sessions never meet)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from submitter.aws.s3 import S3

REGION = "us-east-1"


def bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> Iterator[S3]:
    """Use as `yield from bucket(...)` in a fixture: the bucket inside moto, SUBMITTER_* set for it."""
    for variable in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "SUBMITTER_SANDBOX"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("SUBMITTER_BUCKET", name), ("SUBMITTER_PREFIX", "p"), ("SUBMITTER_REGION", REGION),
                            ("SUBMITTER_HOME", str(tmp_path / "home")),
                            ("COLUMNS", "250")):  # rich tables unwrapped, so rows can be asserted
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)  # no stray .env; ./results lands here
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=name)
        yield S3(client, name)
