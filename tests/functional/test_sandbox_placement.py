"""The sandbox daemon's control endpoint for placement: the Spot Instance Advisor copy it serves and the pool
interruption rates it takes (a real Runner and control server on loopback; no instance is started)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from submitter.placement import advisor
from submitter.sandbox import state as st
from submitter.sandbox.daemon import control_server
from submitter.sandbox.runner import Runner


@pytest.fixture()
def control(tmp_path: Path) -> Iterator[tuple[str, Runner]]:
    runner = Runner(None, None, st.Paths(tmp_path), "label", "us-east-1", "123456789012", "http://127.0.0.1:9", "img")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ready = threading.Event()
    ready.set()
    server = control_server(port, runner, ready)
    yield f"http://127.0.0.1:{port}", runner
    server.shutdown()
    server.server_close()


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_advisor_copy_is_served_and_read_as_aws_document(control: tuple[str, Runner], tmp_path: Path) -> None:
    url, _ = control
    found = advisor.bands(url + "/spot-advisor-data.json", tmp_path / "cache", "us-east-1", ["c5.large", "g5.2xlarge"])
    assert {t: b.label for t, b in found.by_type.items()} == {"c5.large": "<5%", "g5.2xlarge": "15-20%"}
    assert "fetched now" in found.note


def test_a_pool_rate_is_set_listed_and_stopped(control: tuple[str, Runner]) -> None:
    url, runner = control
    code, body = _post(url + "/interrupt-rate", {"instance_type": "t3.medium", "availability_zone": "us-east-1b",
                                                 "per_hour": 60, "notice_seconds": 40})
    assert code == 200 and body["pools"] == {"t3.medium us-east-1b": {"per_hour": 60, "notice_seconds": 40}}
    assert runner.rates == {("t3.medium", "us-east-1b"): (60.0, 40.0)}
    code, body = _post(url + "/interrupt-rate", {"instance_type": "t3.medium", "availability_zone": "us-east-1b",
                                                 "per_hour": 0, "notice_seconds": 40})
    assert code == 200 and body["pools"] == {} and runner.rates == {}


@pytest.mark.parametrize("body", [{}, {"instance_type": "t3.medium", "availability_zone": "us-east-1b",
                                       "per_hour": -1, "notice_seconds": 40},
                                  {"instance_type": "t3.medium", "availability_zone": "b", "per_hour": "x",
                                   "notice_seconds": 1}])
def test_a_bad_rate_request_is_refused(control: tuple[str, Runner], body: dict[str, Any]) -> None:
    url, runner = control
    code, answer = _post(url + "/interrupt-rate", body)
    assert code == 400 and "expected JSON" in answer["error"] and runner.rates == {}
