"""Functional-test helpers: an in-process moto account with what a submission needs. The helper modules beside
this file (moto_bucket.py) are importable as plain modules (pytest runs with --import-mode=importlib, which puts
no test folder on sys.path)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402 - after the path set-up above

REGION = "us-east-1"


@pytest.fixture()
def moto_account(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A factory: `with moto_account(bucket, repository[, config]) as (session, repository_uri):` gives moto
    in-process with fake credentials, the bucket, and an image tagged v1 in the ECR repository."""
    return lambda bucket, repository, config=None: _moto_account(monkeypatch, bucket, repository, config)


@contextmanager
def _moto_account(monkeypatch: pytest.MonkeyPatch, bucket: str, repository: str,
                  config: dict[str, Any] | None) -> Iterator[tuple[Any, str]]:
    import boto3
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws(config=config) if config else mock_aws():  # type: ignore[arg-type]
        session = boto3.Session(region_name=REGION)
        session.client("s3").create_bucket(Bucket=bucket)
        ecr = session.client("ecr")
        repo = ecr.create_repository(repositoryName=repository)["repository"]
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                       "digest": "sha256:" + "0" * 64},
            "layers": [],
        })
        ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag="v1")
        yield session, repo["repositoryUri"]


NO_INTERNET = "http://127.0.0.1:9/spot-advisor-data.json"  # loopback port 9: refused at once


@pytest.fixture(autouse=True)
def _no_spot_advisor_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test fetches AWS's Spot Instance Advisor data (a submit or dry run against moto would): the default
    URL and SUBMITTER_SPOT_ADVISOR_URL point at a closed loopback port, so the bands are unknown and nothing is
    cached. A test that wants bands passes its own URL (tests/functional/test_placement_lookup.py)."""
    from submitter.placement import advisor

    monkeypatch.setattr(advisor, "URL", NO_INTERNET)
    monkeypatch.setenv("SUBMITTER_SPOT_ADVISOR_URL", NO_INTERNET)
