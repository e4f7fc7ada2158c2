"""placement/lookup.market against moto in-process: prices, the sandbox's GetSpotPlacementScores emulation (the
same moto patch the sandbox daemon installs), the advisor bands from a loopback server serving the recorded
fixture, and the observed rates and job history read from instance reports and status documents in S3."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from submitter import contract
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.placement import advisor, lookup
from submitter.placement.facts import Band, Observed
from submitter.settings import Settings

REGION = "us-east-1"
BUCKET = "placement-bucket"
LAYOUT = contract.Layout("p")
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "spot-advisor" / "spot-advisor-data.json"
OLD, NEW = "ptest-20261101-100000-aaaaaa", "other-20261102-100000-bbbbbb"


@pytest.fixture()
def advisor_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:
            body = FIXTURE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/spot-advisor-data.json"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        session.client("s3").create_bucket(Bucket=BUCKET)
        yield Aws(session, REGION, bucket=BUCKET)


@pytest.fixture()
def sandbox_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox daemon's GetSpotPlacementScores, installed on moto for this test only."""
    from moto.ec2.responses.spot_instances import SpotInstances

    from submitter.sandbox import placement

    monkeypatch.setattr(SpotInstances, "get_spot_placement_scores", None, raising=False)  # undone afterwards
    placement.install()


def _history(aws: Aws) -> None:
    """Two submissions' instance reports, and the job's runs: one succeeded in 20 min, one interrupted."""
    s3 = S3.connect(aws, BUCKET)
    reports = {  # (submission, instance): (type, AZ, state, booted, ended)
        (OLD, "i-1"): ("c5.large", "us-east-1b", contract.INTERRUPTED, "10:00:00", "10:30:00"),
        (OLD, "i-2"): ("c5.large", "us-east-1b", contract.DRAINED, "10:30:00", "11:30:00"),
        (NEW, "i-3"): ("c5.large", "us-east-1b", contract.INTERRUPTED, "12:00:00", "12:00:00"),
        (NEW, "i-4"): ("m5.large", "us-east-1d", contract.DRAINED, "12:00:00", "14:00:00"),
    }
    for (sub, iid), (itype, zone, state, booted, ended) in reports.items():
        s3.put_json(LAYOUT.instance_report(sub, iid), {
            "instance_id": iid, "instance_type": itype, "availability_zone": zone, "state": state,
            "booted_at": f"2026-11-01T{booted}Z", "time": f"2026-11-01T{ended}Z", "runs": []})
    s3.put_json(LAYOUT.queued(OLD), {"runs": [f"{OLD}-0", f"{OLD}-1"]})
    s3.put_json(LAYOUT.status(f"{OLD}-0"), {"run_id": f"{OLD}-0", "state": "succeeded", "interruptions": 0,
                                            "started_at": "2026-11-01T10:00:00Z", "ended_at": "2026-11-01T10:20:00Z"})
    s3.put_json(LAYOUT.status(f"{OLD}-1"), {"run_id": f"{OLD}-1", "state": "succeeded", "interruptions": 1,
                                            "started_at": "2026-11-01T11:00:00Z", "ended_at": "2026-11-01T11:05:00Z"})


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings(region=REGION, bucket=BUCKET, prefix="p", home=tmp_path / "home", spot_advisor_url=url)


def test_market_fills_every_figure_per_pool(aws: Aws, sandbox_scores: None, advisor_url: str,
                                            tmp_path: Path) -> None:
    _history(aws)
    market = lookup.market(aws, ["c5.large", "m5.large"], sandbox=True, job="ptest", target_capacity=1,
                           settings=_settings(tmp_path, advisor_url))
    assert market.prices, market.note
    b = market.facts[("c5.large", "us-east-1b")]
    assert b.score == 10  # the cheapest AZ in the sandbox's table
    assert b.band == Band(0, "<5%", 0.0, 0.05)
    # 2 interruptions over 0.5 + 1.0 + 0 h (i-3 was reclaimed as it booted) = 1.5 instance-hours.
    assert b.observed == Observed(2, 1.5)
    assert market.facts[("m5.large", "us-east-1d")].observed == Observed(0, 2.0)
    assert market.facts[("m5.large", "us-east-1d")].band == Band(1, "5-10%", 0.05, 0.10)
    assert market.facts[("m5.large", "us-east-1e")].observed is None  # never ran there
    # Only the uninterrupted succeeded run counts for the runtime: 20 min.
    assert market.history.runtimes_s == [1200.0]
    text = "\n".join(market.notes)
    assert "placement scores: single-AZ, for 1 instance(s)" in text
    assert "Spot Instance Advisor data from " + advisor_url in text
    assert "4 instance report(s) of 2 submission(s)" in text
    assert "1 succeeded uninterrupted run(s) of 2" in text


def test_reports_are_read_once_then_come_from_the_cache(aws: Aws, sandbox_scores: None, advisor_url: str,
                                                        tmp_path: Path) -> None:
    _history(aws)
    settings = _settings(tmp_path, advisor_url)
    lookup.market(aws, ["c5.large"], sandbox=True, settings=settings)
    again = lookup.market(aws, ["c5.large"], sandbox=True, settings=settings)
    assert any("(4 cached)" in n for n in again.notes), again.notes
    assert again.facts[("c5.large", "us-east-1b")].observed == Observed(2, 1.5)


def test_without_scores_bands_or_a_bucket_the_market_still_answers(aws: Aws, tmp_path: Path) -> None:
    # moto itself has no GetSpotPlacementScores; the advisor URL answers nothing; no bucket is set.
    settings = Settings(region=REGION, bucket=None, prefix="p", home=tmp_path / "home",
                        spot_advisor_url="http://127.0.0.1:9/nothing.json")
    market = lookup.market(Aws(aws.session, REGION), ["c5.large"], sandbox=True, settings=settings)
    assert market.prices
    assert all(f.score is None and f.band is None and f.observed is None for f in market.facts.values())
    text = "\n".join(market.notes)
    assert "placement scores unknown" in text
    assert "interruption bands unknown" in text
    assert "observed interruption rates and job history unknown (no bucket set)" in text


def test_sandbox_mode_reads_bands_from_the_sandbox_not_the_internet(tmp_path: Path) -> None:
    settings = Settings(sandbox=True, sandbox_port=47000, home=tmp_path)
    assert lookup.advisor_url(settings) == "http://127.0.0.1:47002/spot-advisor-data.json"
    assert lookup.advisor_url(Settings(home=tmp_path)) == advisor.URL  # AWS's (tests point it at loopback)
    chosen = Settings(sandbox=True, home=tmp_path, spot_advisor_url="https://example.org/a.json")
    assert lookup.advisor_url(chosen) == "https://example.org/a.json"  # SUBMITTER_SPOT_ADVISOR_URL wins
