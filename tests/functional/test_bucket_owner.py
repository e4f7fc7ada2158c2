"""Bucket ownership against moto in-process: every request to our bucket names our account as its expected
owner, and `init`, `submit` and `doctor` refuse a bucket of another account.

moto ignores ExpectedBucketOwner (docs/sandbox.md), so the header is checked on the wire with a botocore event
hook, and the refusals come from the ListBuckets cross-check, which moto does keep per account."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from submitter import execute
from submitter.account import doctor, init
from submitter.aws import s3 as s3_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.cli import app
from submitter.errors import SettingsError
from submitter.progress import NullProgress
from submitter.settings import Settings
from submitter.spec import load

REGION = "us-east-1"
OURS = "123456789012"  # moto's default account: what these credentials belong to
THEIRS = "210987654321"


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "SUBMITTER_SANDBOX", "SUBMITTER_BUCKET", "MOTO_ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield Aws(boto3.Session(region_name=REGION), REGION)


@contextmanager
def _as(account: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A session of another account (moto takes the account from MOTO_ACCOUNT_ID, request by request)."""
    monkeypatch.setenv("MOTO_ACCOUNT_ID", account)
    try:
        yield boto3.Session(region_name=REGION)
    finally:
        monkeypatch.delenv("MOTO_ACCOUNT_ID")


def _their_bucket(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with _as(THEIRS, monkeypatch) as session:
        session.client("s3").create_bucket(Bucket=name)
        assert session.client("sts").get_caller_identity()["Account"] == THEIRS


def _wire(aws: Aws) -> list[tuple[str, str, str | None]]:
    """(operation, url, x-amz-expected-bucket-owner) of every request the session's S3 client sends."""
    sent: list[tuple[str, str, str | None]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        owner = request.headers.get("x-amz-expected-bucket-owner")
        sent.append((event_name.rsplit(".", 1)[-1], request.url,
                     owner.decode() if isinstance(owner, bytes) else owner))

    aws.client("s3").meta.events.register("before-send.s3", record)
    return sent


# ------------------------------------------------------------------------------------------ on the wire


def test_every_request_to_our_bucket_names_our_account(aws: Aws, tmp_path: Path) -> None:
    aws.client("s3").create_bucket(Bucket="fown")
    s3 = S3.connect(aws, "fown")
    sent = _wire(aws)

    s3.put_json("p/doc.json", {"a": 1})
    s3.put_bytes("p/raw", b"x")
    assert s3.get_json("p/doc.json") == {"a": 1}
    assert s3.get_bytes("p/none") is None
    assert s3.exists("p/raw") and not s3.exists("p/none")
    assert [o["Key"] for o in s3.objects("p/")] == ["p/doc.json", "p/raw"]
    assert s3.prefixes("") == ["p"]
    big = tmp_path / "big.bin"
    big.write_bytes(b"0" * (9 << 20))  # above boto3's multipart threshold: CreateMultipartUpload, UploadPart...
    s3.upload_file(str(big), "p/big.bin")
    s3.download("p/big.bin", str(tmp_path / "back.bin"))
    s3.append_range("p/raw", str(tmp_path / "raw"), 0)
    assert (tmp_path / "back.bin").stat().st_size == 9 << 20

    operations = {op for op, _, _ in sent}
    assert {"PutObject", "GetObject", "HeadObject", "ListObjectsV2", "CreateMultipartUpload", "UploadPart",
            "CompleteMultipartUpload"} <= operations, operations
    assert sent and all(owner == OURS for _, _, owner in sent), [s for s in sent if s[2] != OURS]


def test_another_bucket_through_the_same_client_gets_no_owner(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only our bucket is pinned: the header would make a read of someone else's dataset fail."""
    aws.client("s3").create_bucket(Bucket="fown")
    _their_bucket("fdataset", monkeypatch)
    client = s3_api.client(Aws(aws.session, REGION, bucket="fown", _clients=aws._clients))
    sent = _wire(aws)
    client.list_objects_v2(Bucket="fdataset")
    client.list_objects_v2(Bucket="fown")
    assert [(op, owner) for op, _, owner in sent] == [("ListObjectsV2", None), ("ListObjectsV2", OURS)]


def test_the_account_is_asked_of_sts_once_per_session(aws: Aws) -> None:
    aws.client("s3").create_bucket(Bucket="fown")
    calls: list[str] = []
    aws.client("sts").meta.events.register("before-send.sts", lambda **kw: calls.append("sts"))
    s3 = S3.connect(aws, "fown")
    assert calls == [], "making the client asks nothing"
    for n in range(3):
        s3.put_bytes(f"k{n}", b"x")
    assert aws.account() == OURS
    assert calls == ["sts"]


# ------------------------------------------------------------------------------------------ refusals


def test_init_refuses_a_bucket_of_another_account(aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _their_bucket("ftheirs-init", monkeypatch)
    settings = Settings(region=REGION, home=tmp_path / "home", bucket="ftheirs-init", ecr_repository="finit")
    with pytest.raises(SettingsError) as caught:
        init.plan_init(aws, settings, tmp_path)
    error = caught.value
    assert error.exit_code == 2 and error.where == "SUBMITTER_BUCKET=ftheirs-init"
    assert f"not this account's ({OURS})" in error.what
    assert error.next_step and "pick another name" in error.next_step
    # nothing was created or changed: no repository, no setting on their bucket
    assert aws.client("ecr").describe_repositories()["repositories"] == []
    with _as(THEIRS, monkeypatch) as session:
        assert "Policy" not in str(session.client("s3").list_buckets())
        with pytest.raises(Exception, match="NoSuchBucketPolicy|policy"):
            session.client("s3").get_bucket_policy(Bucket="ftheirs-init")


def test_init_command_exits_2_on_a_bucket_of_another_account(aws: Aws, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _their_bucket("ftheirs-cli", monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUBMITTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SUBMITTER_REGION", REGION)
    monkeypatch.setenv("SUBMITTER_BUCKET", "ftheirs-cli")
    result = CliRunner().invoke(app, ["init", "--yes"])
    assert result.exit_code == 2, result.output
    assert "SUBMITTER_BUCKET=ftheirs-cli: the bucket exists but is not this account's" in result.output
    assert not (tmp_path / ".env").exists()


def test_init_default_name_is_unguessable_and_kept_by_a_second_init(aws: Aws, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Someone who knows the account id took the old predictable name and one with the new stem: neither is used.
    _their_bucket(f"submitter-{OURS}-{REGION}", monkeypatch)
    _their_bucket(f"submitter-{OURS}-{REGION}-00000000", monkeypatch)
    settings = Settings(region=REGION, home=tmp_path / "home", ecr_repository="fdefault")
    first = init.plan_init(aws, settings, tmp_path)
    assert re.fullmatch(rf"submitter-{OURS}-{REGION}-[0-9a-f]{{8}}", first.bucket)
    assert first.bucket != f"submitter-{OURS}-{REGION}-00000000"
    init.apply_init(first, lambda _t: None)
    (tmp_path / ".env").unlink()  # a second init that has lost .env still finds the first one's bucket
    again = init.plan_init(aws, settings, tmp_path)
    assert again.bucket == first.bucket and again.changes == []
    assert [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]] == [first.bucket]


def test_submit_refuses_a_bucket_of_another_account_before_anything(moto_account: Any, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_account("fown-submit", "train") as (session, uri):
        _their_bucket("ftheirs-submit", monkeypatch)
        aws = Aws(session, REGION)
        (tmp_path / "job.yaml").write_text(
            f"name: fowner\nimage: {{uri: '{uri}:v1'}}\ncommand: [python]\nresources: {{instance_types: [c5.large]}}\n")
        settings = Settings(bucket="ftheirs-submit", region=REGION, prefix="p")

        def no_engine() -> Any:
            raise AssertionError("refused before any image work")

        with pytest.raises(SettingsError) as caught:
            execute.submit(aws, settings, [load(tmp_path / "job.yaml")], {}, tmp_path, NullProgress(), no_engine)
        error = caught.value
        assert error.exit_code == 2 and error.where == "SUBMITTER_BUCKET=ftheirs-submit"
        assert f"not owned by this AWS account ({OURS})" in error.what
        assert session.client("sqs").list_queues().get("QueueUrls", []) == []
        assert session.client("ec2").describe_launch_templates()["LaunchTemplates"] == []
        with _as(THEIRS, monkeypatch) as theirs:
            assert theirs.client("s3").list_objects_v2(Bucket="ftheirs-submit")["KeyCount"] == 0


def test_doctor_fails_the_bucket_check_for_another_account(aws: Aws, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _their_bucket("ftheirs-doctor", monkeypatch)
    settings = Settings(region=REGION, home=tmp_path / "home", bucket="ftheirs-doctor")
    (check,) = [c for c in doctor.doctor(settings, aws, [], engine=None) if c.name == "bucket"]
    assert not check.ok
    assert f"is not this account's ({OURS})" in check.detail


def test_the_boto3_runtime_store_names_the_owner_on_every_request(aws: Aws, tmp_path: Path) -> None:
    from submitter.runtime.store_boto3 import Boto3Store

    aws.client("s3").create_bucket(Bucket="fown-rt")
    store = Boto3Store(REGION, "fown-rt", OURS)
    sent: list[tuple[str, str | None]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        owner = request.headers.get("x-amz-expected-bucket-owner")
        sent.append((event_name.rsplit(".", 1)[-1], owner.decode() if isinstance(owner, bytes) else owner))

    store.s3.meta.events.register("before-send.s3", record)
    store.put_bytes("p/a", b"x")
    assert store.get_bytes("p/a") == b"x" and store.exists("p/a") and store.keys("p/") == ["p/a"]
    (tmp_path / "f").write_text("y")
    store.upload_file(tmp_path / "f", "p/f")
    assert {op for op, _ in sent} >= {"PutObject", "GetObject", "HeadObject", "ListObjectsV2"}
    assert all(owner == OURS for _, owner in sent), sent


def test_the_account_is_asked_of_sts_once_per_access_key_and_remembered(tmp_path: Path) -> None:
    import threading

    with mock_aws():
        session = boto3.Session(aws_access_key_id="AKIAREMEMBERED000001", aws_secret_access_key="x",
                                region_name=REGION)
        calls: list[str] = []
        first = Aws(session, REGION, accounts_file=tmp_path / "accounts.json")
        first.client("sts").meta.events.register("before-call.sts.GetCallerIdentity",
                                                 lambda **_: calls.append("sts"))
        # S3's worker threads ask at once: one STS call.
        threads = [threading.Thread(target=first.account) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert first.account() == OURS and calls == ["sts"]
        assert "AKIAREMEMBERED" not in (tmp_path / "accounts.json").read_text(), "the key id is not stored"
        # The next command with the same key reads it back: no STS client, no call.
        second = Aws(session, REGION, accounts_file=tmp_path / "accounts.json")
        assert second.account() == OURS and "sts" not in second._clients
        # Another key is asked anew.
        other = Aws(boto3.Session(aws_access_key_id="AKIAREMEMBERED000002", aws_secret_access_key="x",
                                  region_name=REGION), REGION, accounts_file=tmp_path / "accounts.json")
        assert other.account() == OURS and "sts" in other._clients
