"""The IMDSv2 emulator's answers: tokens, the metadata tree, notices."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from submitter.sandbox.imds import Imds, InstanceMeta


@pytest.fixture()
def imds() -> Iterator[Imds]:
    meta = InstanceMeta("i-0123456789abcdef0", "g4dn.xlarge", "us-east-1b", "us-east-1", "123456789012",
                        role_name="job-role", user_data=b"#!/bin/bash\necho hi\n", lifecycle="spot")
    server = Imds(meta)
    yield server
    server.stop()


def test_tokens_are_checked(imds: Imds) -> None:
    assert not imds.token_valid(None)
    assert not imds.token_valid("made-up")
    assert imds.token_valid(imds.issue_token(60))


def test_tree_answers_the_basics_and_lists_directories(imds: Imds) -> None:
    assert imds.lookup("/latest/meta-data/instance-id")[2] == b"i-0123456789abcdef0"
    assert imds.lookup("/latest/meta-data/placement/region")[2] == b"us-east-1"
    assert imds.lookup("/latest/meta-data/iam/security-credentials/")[2] == b"job-role"
    creds = json.loads(imds.lookup("/latest/meta-data/iam/security-credentials/job-role")[2])
    assert creds["Code"] == "Success" and creds["Token"]
    assert b"placement/" in imds.lookup("/latest/meta-data/")[2].split(b"\n")
    assert imds.lookup("/latest/user-data")[2].startswith(b"#!/bin/bash")
    assert json.loads(imds.lookup("/latest/dynamic/instance-identity/document")[2])["region"] == "us-east-1"


def test_no_role_means_no_credentials(imds: Imds) -> None:
    imds.meta.role_name = None
    assert imds.lookup("/latest/meta-data/iam/security-credentials/")[0] == 404


def test_spot_instance_action_appears_only_once_set(imds: Imds) -> None:
    assert imds.lookup("/latest/meta-data/spot/instance-action")[0] == 404
    imds.set_instance_action("terminate", datetime(2026, 1, 15, 12, 2, tzinfo=timezone.utc))
    status, _, body = imds.lookup("/latest/meta-data/spot/instance-action")
    assert status == 200
    assert json.loads(body) == {"action": "terminate", "time": "2026-01-15T12:02:00Z"}
    assert imds.lookup("/latest/meta-data/events/recommendations/rebalance")[0] == 404
