"""placement/advisor.py: the Spot Instance Advisor document parsed into bands (from the recorded fixture), and
fetched, cached with its date, refreshed after a day, and used stale when the fetch fails (a real HTTP server
on loopback serves the fixture)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from submitter.placement import advisor
from submitter.placement.facts import Band

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "spot-advisor" / "spot-advisor-data.json"
DOCUMENT = json.loads(FIXTURE.read_text())


def test_bands_come_from_the_linux_entries_of_the_region() -> None:
    found = advisor.parse(DOCUMENT, "us-east-1", ["c5.large", "m5.large", "p3.2xlarge", "x9.huge"])
    assert found == {
        "c5.large": Band(0, "<5%", 0.0, 0.05),
        "m5.large": Band(1, "5-10%", 0.05, 0.10),  # Windows says index 0 for m5.large: not ours
        "p3.2xlarge": Band(4, ">20%", 0.20, 1.0),
    }
    assert advisor.parse(DOCUMENT, "eu-west-1", ["m5.large"]) == {"m5.large": Band(3, "15-20%", 0.15, 0.20)}
    assert advisor.parse(DOCUMENT, "ap-south-2", ["c5.large"]) == {}


@pytest.mark.parametrize("document", [None, [], {"ranges": "x"}, {"spot_advisor": {"us-east-1": {"Linux": {
    "c5.large": {"r": 9}}}}, "ranges": DOCUMENT["ranges"]}])
def test_a_document_in_another_shape_gives_no_band(document: Any) -> None:
    assert advisor.parse(document, "us-east-1", ["c5.large"]) == {}


def test_band_bounds_are_read_from_the_labels() -> None:
    assert advisor.band_from_label(2, "10-15%") == Band(2, "10-15%", 0.10, 0.15)
    assert advisor.band_from_label(0, "< 5%") == Band(0, "< 5%", 0.0, 0.05)
    assert advisor.band_from_label(0, "low") is None


class _Server:
    """Serves the fixture at /data.json while `up`; counts the requests."""

    def __init__(self) -> None:
        self.up, self.hits = True, 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                owner.hits += 1
                body = FIXTURE.read_bytes() if owner.up else b"{}"
                self.send_response(200 if owner.up else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/data.json"


@pytest.fixture()
def server() -> Iterator[_Server]:
    found = _Server()
    yield found
    found.http.shutdown()
    found.http.server_close()


def test_fetched_once_then_cached_for_a_day_then_refreshed(server: _Server, tmp_path: Path) -> None:
    document, note = advisor.load(server.url, tmp_path, now=1_000_000)
    assert document == DOCUMENT and "fetched now" in note and server.hits == 1
    document, note = advisor.load(server.url, tmp_path, now=1_000_000 + 3 * 3600)
    assert document == DOCUMENT and "fetched 3 h ago (cached)" in note and server.hits == 1
    advisor.load(server.url, tmp_path, now=1_000_000 + 25 * 3600)
    assert server.hits == 2  # a day old: fetched again


def test_a_failed_refresh_uses_the_stale_cache_and_says_its_age(server: _Server, tmp_path: Path) -> None:
    advisor.load(server.url, tmp_path, now=1_000_000)
    server.up = False
    document, note = advisor.load(server.url, tmp_path, now=1_000_000 + 3 * 86400)
    assert document == DOCUMENT
    assert "could not be refreshed" in note and "cached copy, 3 days old" in note


def test_no_cache_and_no_answer_gives_no_bands_and_says_why(server: _Server, tmp_path: Path) -> None:
    server.up = False
    found = advisor.bands(server.url, tmp_path, "us-east-1", ["c5.large"])
    assert found.by_type == {} and "interruption bands unknown" in found.note and "503" in found.note
    assert [p.suffix for p in tmp_path.iterdir()] == [".failed"]  # no document cached from a failure


def test_a_failed_fetch_is_not_tried_again_for_a_while(server: _Server, tmp_path: Path) -> None:
    """An unreachable page (no network, a proxy) would cost every plan the fetch's timeout: after a failure the
    plans go without it (or with the stale copy) for RETRY_AFTER_S, then try again; a success forgets it."""
    server.up = False
    advisor.load(server.url, tmp_path, now=1_000_000)
    assert server.hits == 1
    server.up = True
    document, note = advisor.load(server.url, tmp_path, now=1_000_000 + advisor.RETRY_AFTER_S - 1)
    assert document is None and server.hits == 1
    assert "503" in note and "not tried again until 15 min after" in note
    document, note = advisor.load(server.url, tmp_path, now=1_000_000 + advisor.RETRY_AFTER_S)
    assert document == DOCUMENT and "fetched now" in note and server.hits == 2
    assert not list(tmp_path.glob("*.failed"))


def test_the_bands_name_the_types_without_one(server: _Server, tmp_path: Path) -> None:
    found = advisor.bands(server.url, tmp_path, "us-east-1", ["c5.large", "t9.tiny"])
    assert set(found.by_type) == {"c5.large"} and "no band for t9.tiny in us-east-1" in found.note


def test_only_https_or_this_machine_is_fetched(tmp_path: Path) -> None:
    document, note = advisor.load("http://example.invalid/data.json", tmp_path)
    assert document is None and "neither https nor this machine" in note


def test_the_default_source_is_aws_spot_advisor_document() -> None:
    import importlib.util

    # The module's own value, read from its source (the autouse fixture points advisor.URL at loopback).
    spec = importlib.util.find_spec("submitter.placement.advisor")
    assert spec and spec.origin
    assert 'URL = "https://spot-bid-advisor.s3.amazonaws.com/spot-advisor-data.json"' in Path(spec.origin).read_text()
