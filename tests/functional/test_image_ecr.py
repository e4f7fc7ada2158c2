"""The ECR adapter against moto in-process: repository settings, image lookups, registry tokens and
their cache, and how ClientErrors reach the user."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from submitter.aws.ecr import KEEP_IMAGES, UNTAGGED_DAYS, Ecr, TokenCache, decode_token
from submitter.aws.session import Aws
from submitter.errors import AwsError


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield Aws(boto3.Session(region_name="us-east-1"), "us-east-1")


def _name() -> str:
    return f"test/{uuid.uuid4().hex[:10]}"


class _Calls:
    """Counts API calls by operation name through botocore's event hooks (the client stays real)."""

    def __init__(self, client: object) -> None:
        self.names: list[str] = []
        client.meta.events.register("before-call.ecr.*", self._seen)  # type: ignore[attr-defined]

    def _seen(self, model: object, **_: object) -> None:
        self.names.append(model.name)  # type: ignore[attr-defined]


def test_ensure_repository_creates_it_with_our_settings_once(aws: Aws) -> None:
    name = _name()
    ecr = Ecr(aws, TokenCache())
    first = ecr.ensure_repository(name)
    second = ecr.ensure_repository(name)
    assert first.created and not second.created
    assert first.uri == second.uri and first.uri.endswith(f"/{name}")

    client = aws.client("ecr")
    repo = client.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    policy = json.loads(client.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])
    untagged, newest = policy["rules"]
    assert untagged["selection"] == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": UNTAGGED_DAYS,
    }
    assert newest["selection"] == {
        "tagStatus": "any",
        "countType": "imageCountMoreThan",
        "countNumber": KEEP_IMAGES,
    }
    assert {r["action"]["type"] for r in policy["rules"]} == {"expire"}


def test_image_digest_of_missing_tag_or_repository_is_none(aws: Aws) -> None:
    name = _name()
    ecr = Ecr(aws, TokenCache())
    assert ecr.image_digest(name, "c-0") is None  # no repository yet
    ecr.ensure_repository(name)
    assert ecr.image_digest(name, "c-0") is None
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {},
            "layers": [],
        }
    )
    put = aws.client("ecr").put_image(repositoryName=name, imageManifest=manifest, imageTag="c-1")
    digest = put["image"]["imageId"]["imageDigest"]
    assert ecr.image_digest(name, "c-1") == digest
    assert ecr.image_digest(name, None, digest=digest) == digest


def test_token_decodes_to_user_password_and_registry_host(aws: Aws) -> None:
    auth = Ecr(aws, TokenCache()).registry_auth()
    assert (auth.username, auth.password) == ("AWS", "123456789012-auth-token")
    assert auth.registry == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert auth.auth_config() == {
        "username": "AWS",
        "password": "123456789012-auth-token",
        "serveraddress": auth.registry,
    }
    aws.registry = "127.0.0.1:5000"  # a registry override (the sandbox) replaces the proxyEndpoint host
    assert Ecr(aws, TokenCache()).registry_auth().registry == "127.0.0.1:5000"


def test_past_expiry_is_used_for_this_process_not_refetched_in_a_loop(aws: Aws, tmp_path: Path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()]
    cache = TokenCache(tmp_path, clock=lambda: now[0])
    calls = _Calls(aws.client("ecr"))
    ecr = Ecr(aws, cache)
    first = ecr.registry_auth()
    assert first.expires_at < now[0]  # moto says 2015
    assert ecr.registry_auth() == first
    assert calls.names.count("GetAuthorizationToken") == 1
    assert list(tmp_path.iterdir()) == []  # an already-expired token is never written to disk
    now[0] += 11 * 60  # after the grace period, a fresh one is asked for
    ecr.registry_auth()
    assert calls.names.count("GetAuthorizationToken") == 2


def test_valid_token_is_cached_on_disk_until_shortly_before_expiry(tmp_path: Path) -> None:
    now = [1_000_000.0]
    data = {
        "authorizationToken": "QVdTOnNlY3JldA==",
        "proxyEndpoint": "https://1.dkr.ecr.us-east-1.amazonaws.com",
        "expiresAt": datetime.fromtimestamp(now[0] + 12 * 3600, tz=timezone.utc),
    }
    auth = decode_token(data)
    assert (auth.username, auth.password, auth.registry) == (
        "AWS",
        "secret",
        "1.dkr.ecr.us-east-1.amazonaws.com",
    )
    TokenCache(tmp_path, clock=lambda: now[0]).put("k", auth)
    (stored,) = tmp_path.iterdir()
    assert stored.stat().st_mode & 0o777 == 0o600
    later = TokenCache(tmp_path, clock=lambda: now[0])  # another process: served from disk
    assert later.get("k") == auth
    now[0] += 12 * 3600 - 10 * 60  # ten minutes before expiry: inside the refresh margin
    assert TokenCache(tmp_path, clock=lambda: now[0]).get("k") is None


def test_access_denied_names_the_iam_action(aws: Aws) -> None:
    client = aws.client("ecr")
    with Stubber(client) as stub:
        stub.add_client_error("describe_repositories", "RepositoryNotFoundException", "no such repository")
        stub.add_client_error(
            "create_repository",
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/u is not authorized to perform: ecr:CreateRepository",
        )
        with pytest.raises(AwsError) as caught:
            Ecr(aws, TokenCache()).ensure_repository(_name())
    err = caught.value
    assert (err.service, err.operation, err.code) == ("ECR", "CreateRepository", "AccessDeniedException")
    assert "`ecr:CreateRepository`" in (err.next_step or "")
    assert err.render().startswith("AWS ECR CreateRepository: AccessDeniedException: User:")


def test_refused_token_names_get_authorization_token(aws: Aws) -> None:
    client = aws.client("ecr")
    with Stubber(client) as stub:
        stub.add_client_error("get_authorization_token", "AccessDeniedException", "not authorized")
        with pytest.raises(AwsError) as caught:
            Ecr(aws, TokenCache()).registry_auth()
    assert "`ecr:GetAuthorizationToken`" in (caught.value.next_step or "")
