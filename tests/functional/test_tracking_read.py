"""Tracking's read side against moto in-process: status, logs, results, cost and prices, as the core functions
and through the CLI. Everything comes from S3 and EC2; nothing local is read or written besides downloads."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import moto_bucket
import pytest
from typer.testing import CliRunner

from submitter import pricing, tracking
from submitter.aws import ec2 as ec2_api
from submitter.aws.s3 import S3
from submitter.cli import app
from submitter.errors import UsageError

REGION = "us-east-1"
BUCKET = "ftrack"
WHERE = tracking.Where(BUCKET, "p")
LAYOUT = WHERE.layout


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3]:
    yield from moto_bucket.bucket(monkeypatch, tmp_path, BUCKET)


@pytest.fixture()
def price_table() -> Iterator[None]:
    """moto answers DescribeSpotPriceHistory from the sandbox's table, as the sandbox daemon does."""
    from moto.ec2.responses.spot_instances import SpotInstances

    from submitter.sandbox import daemon

    original = SpotInstances.describe_spot_price_history
    daemon.install_price_table()
    try:
        yield
    finally:
        SpotInstances.describe_spot_price_history = original  # type: ignore[method-assign]


def _submission(s3: S3, runs: int, job: str = "ftr", **status: Any) -> tuple[str, list[str]]:
    sub = f"{job}-20261126-070000-{uuid.uuid4().hex[:6]}"
    ids = [f"{sub}-{i}" for i in range(runs)]
    s3.put_json(LAYOUT.queued(sub), {"runs": ids})
    for run_id in ids:
        s3.put_json(LAYOUT.status(run_id),
                    {"run_id": run_id, "submission_id": sub, "job": job, "state": "queued", **status})
        s3.put_json(LAYOUT.run_spec(run_id),
                    {"run_id": run_id, "region": REGION, "spec": {"resources": {"volume_gb": 100}}})
    return sub, ids


# ---------------------------------------------------------------------------------------------- status


def test_status_reads_every_run_of_a_submission_a_job_or_one_run(s3: S3) -> None:
    sub, ids = _submission(s3, 3)
    assert tracking.resolve(s3, WHERE, sub) == ids
    assert tracking.resolve(s3, WHERE, "ftr") == ids  # a job means its latest submission
    assert tracking.resolve(s3, WHERE, ids[1]) == [ids[1]]
    assert [s["state"] for s in tracking.statuses(s3, WHERE, ids)] == ["queued"] * 3
    with pytest.raises(UsageError, match="no run, submission or job"):
        tracking.resolve(s3, WHERE, "nothing-here")

    result = CliRunner().invoke(app, ["status", sub, "--json"])
    assert result.exit_code == 0, result.output
    assert [r["run_id"] for r in json.loads(result.output)["runs"]] == ids


# ---------------------------------------------------------------------------------------------- logs


def test_logs_of_an_ended_run_are_the_whole_log_and_follow_streams_chunks_until_the_end(s3: S3) -> None:
    _, (run_id,) = _submission(s3, 1)
    with pytest.raises(UsageError, match="no such run"):
        tracking.print_logs(s3, WHERE, "nope", io.StringIO())

    # Live: two chunks so far; the "agent" adds one more and ends the run while we follow.
    s3.put_json(LAYOUT.status(run_id), {"run_id": run_id, "state": "running"})
    s3.put_bytes(LAYOUT.chunk(run_id, 0), b"epoch 1\n")
    s3.put_bytes(LAYOUT.chunk(run_id, 1), b"epoch 2\n")
    ticks: list[float] = []

    def agent_progress(_: float) -> None:
        ticks.append(1)
        if len(ticks) == 2:
            s3.put_bytes(LAYOUT.chunk(run_id, 2), b"epoch 3\ndone\n")
            s3.put_json(LAYOUT.status(run_id), {"run_id": run_id, "state": "succeeded"})

    out = io.StringIO()
    said: list[str] = []
    final = tracking.print_logs(s3, WHERE, run_id, out, follow=True, say=said.append, sleep=agent_progress)
    assert out.getvalue() == "epoch 1\nepoch 2\nepoch 3\ndone\n"
    assert final["state"] == "succeeded" and said[-1] == f"{run_id}: succeeded"

    # Ended: container.log is the whole log, in one read.
    s3.put_bytes(LAYOUT.container_log(run_id), b"the whole log\n")
    s3.put_bytes(LAYOUT.agent_log(run_id), b"agent lines\n")
    result = CliRunner().invoke(app, ["logs", run_id])
    assert result.exit_code == 0 and result.stdout == "the whole log\n"
    result = CliRunner().invoke(app, ["logs", run_id, "--agent"])
    assert result.stdout == "agent lines\n"


# ---------------------------------------------------------------------------------------------- results


def test_results_download_skips_identical_files_and_resumes_a_partial_one(s3: S3, tmp_path: Path) -> None:
    sub, ids = _submission(s3, 2)
    big = bytes(range(256)) * 4096  # 1 MiB
    s3.put_bytes(LAYOUT.outputs(ids[0]) + "metrics.json", b'{"accuracy": 0.9}')
    s3.put_bytes(LAYOUT.outputs(ids[0]) + "model/weights.bin", big)
    s3.put_bytes(LAYOUT.outputs(ids[1]) + "metrics.json", b'{"accuracy": 0.8}')
    seen: list[int] = []
    started: list[tuple[int, int]] = []
    done = tracking.download_results(s3, WHERE, ids, tmp_path / "r", on_start=lambda f, b: started.append((f, b)),
                                     on_bytes=seen.append)
    assert (done.fetched, done.skipped) == (3, 0)
    assert started == [(3, len(big) + 34)] and sum(seen) == len(big) + 34
    assert (tmp_path / "r" / ids[0] / "model" / "weights.bin").read_bytes() == big

    # Again: every file is identical (size and MD5 ETag), nothing is fetched.
    again = tracking.download_results(s3, WHERE, ids, tmp_path / "r")
    assert (again.fetched, again.skipped) == (0, 3)

    # Same size, different bytes: not identical, fetched again.
    (tmp_path / "r" / ids[1] / "metrics.json").write_bytes(b'{"accuracy": 0.1}')
    assert tracking.download_results(s3, WHERE, ids, tmp_path / "r").fetched == 1
    assert (tmp_path / "r" / ids[1] / "metrics.json").read_bytes() == b'{"accuracy": 0.8}'

    # An interrupted download left the first 300 KiB as .part: only the rest is fetched.
    target = tmp_path / "r" / ids[0] / "model" / "weights.bin"
    target.unlink()
    target.with_name("weights.bin.part").write_bytes(big[:300 * 1024])
    fetched: list[int] = []
    tracking.download_results(s3, WHERE, [ids[0]], tmp_path / "r", on_bytes=fetched.append)
    assert target.read_bytes() == big and not target.with_name("weights.bin.part").exists()
    assert sum(fetched) == len(big)  # progress counts the resumed bytes too...
    assert fetched[0] == 300 * 1024  # ...the part already there first, not downloaded again

    # CLI: default destination ./results/<run-id>/
    result = CliRunner().invoke(app, ["results", sub])
    assert result.exit_code == 0, result.output
    assert (Path("results") / ids[1] / "metrics.json").is_file()


def test_identical_understands_multipart_etags(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "f"
    data = b"x" * (8 * 1024 * 1024 + 10)
    path.write_bytes(data)
    parts = [data[:8 * 1024 * 1024], data[8 * 1024 * 1024:]]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
    assert tracking.identical(path, len(data), etag)
    assert not tracking.identical(path, len(data), "0" * 32 + "-2")


# ---------------------------------------------------------------------------------------------- cost


def test_average_price_weights_each_price_by_the_time_it_held() -> None:
    t0 = datetime(2026, 11, 26, 7, tzinfo=timezone.utc)
    points = [(t0 - timedelta(hours=1), 0.10), (t0 + timedelta(minutes=30), 0.20)]
    assert tracking.average_price(points, t0, t0 + timedelta(hours=1)) == pytest.approx(0.15)
    assert tracking.average_price(points, t0, t0 + timedelta(minutes=30)) == pytest.approx(0.10)
    assert tracking.average_price([], t0, t0 + timedelta(hours=1)) is None


def test_cost_is_price_history_times_runtime_plus_ebs_with_the_on_demand_comparison(s3: S3, price_table: None) -> None:
    from submitter.sandbox import prices

    now = datetime.now(timezone.utc).replace(microsecond=0)
    sub, ids = _submission(s3, 2)
    s3.put_json(LAYOUT.status(ids[0]), {
        "run_id": ids[0], "submission_id": sub, "state": "succeeded", "instance_type": "c5.large",
        "availability_zone": "us-east-1b", "started_at": _iso(now - timedelta(minutes=40)),
        "ended_at": _iso(now - timedelta(minutes=10)), "price": 0.5})
    # ids[1] stays queued: no runtime, no cost
    ec2 = boto3.client("ec2", region_name=REGION)
    calls: list[tuple[str, str]] = []

    def history(t: str, az: str, lo: datetime, hi: datetime) -> list[tuple[datetime, float]]:
        calls.append((t, az))
        return ec2_api.price_history(ec2, t, az, lo, hi)

    report = tracking.costs(s3, WHERE, ids, history, REGION, now=now)
    spot = prices.price("c5.large", "us-east-1b")
    assert spot is not None
    row = report["runs"][0]
    assert row["price_source"] == "spot price history" and row["spot_price"] == pytest.approx(spot)
    assert row["hours"] == pytest.approx(0.5)
    ebs = pricing.ebs_per_hour(REGION, 100) * 0.5
    assert row["ebs_cost"] == pytest.approx(ebs, abs=1e-6)
    assert row["total"] == pytest.approx(spot * 0.5 + ebs, abs=1e-5)
    assert row["on_demand_cost"] == pytest.approx(0.085 * 0.5 + ebs, abs=1e-5)
    assert 0.5 < row["savings"] < 0.7
    assert report["runs"][1]["total"] == 0 and report["total"]["priced"] == 2
    assert calls == [("c5.large", "us-east-1b")], "one history call per pool"

    result = CliRunner().invoke(app, ["cost", sub, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"]["total"] == pytest.approx(report["total"]["total"], abs=1e-5)
    table = CliRunner().invoke(app, ["cost", "--since", "2026-11-01"])
    assert table.exit_code == 0 and ids[0] in table.output and "total" in table.output
    bad = CliRunner().invoke(app, ["cost", "--since", "yesterday"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


def test_cost_falls_back_to_the_agents_recorded_price_without_history(s3: S3) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    sub, (run_id,) = _submission(s3, 1)
    s3.put_json(LAYOUT.status(run_id), {
        "run_id": run_id, "submission_id": sub, "state": "cancelled", "instance_type": "x9.huge",
        "availability_zone": "us-east-1a", "started_at": _iso(now - timedelta(hours=2)),
        "ended_at": _iso(now - timedelta(hours=1)), "price": 0.25})
    report = tracking.costs(s3, WHERE, [run_id], lambda *_: [], REGION, now=now)
    row = report["runs"][0]
    assert row["price_source"] == "price recorded by the agent" and row["spot_cost"] == pytest.approx(0.25)
    assert row["on_demand_cost"] is None and row["savings"] is None  # x9.huge: on-demand unknown


# ---------------------------------------------------------------------------------------------- prices


def test_prices_cheapest_first_with_on_demand_and_savings(s3: S3, price_table: None) -> None:
    result = CliRunner().invoke(app, ["prices", "c5.large", "g4dn.xlarge", "x9.huge", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    offers = out["offers"]
    assert [o["spot_price"] for o in offers] == sorted(o["spot_price"] for o in offers)
    assert {o["instance_type"] for o in offers} == {"c5.large", "g4dn.xlarge"} and out["not_offered"] == ["x9.huge"]
    c5 = [o for o in offers if o["instance_type"] == "c5.large"]
    assert len({o["availability_zone"] for o in c5}) == len(c5) > 1, "one row per AZ"
    assert all(o["on_demand"] == 0.085 and 0 < o["savings"] < 1 for o in c5)
    for o in offers:  # the four figures (unknown ones null) and the expected $ per useful hour (issue 17)
        assert {"score", "band", "observed", "interruption_rate"} <= set(o)
        useful = o["expected_per_useful_hour"]
        assert o["spot_price"] < useful["low"] <= useful["high"], "overhead and EBS make an hour of work dearer"
    assert "reference run of 4 h" in out["basis"]
    table = CliRunner().invoke(app, ["prices", "c5.large"])
    assert table.exit_code == 0 and "us-east-1" in table.output and "saving" in table.output
    assert "expected $/useful-h" in table.output and "band" in table.output
    none = CliRunner().invoke(app, ["prices", "x9.huge"])
    assert none.exit_code == 2 and "no spot price" in none.output


# ---------------------------------------------------------------------------------------------- never outside DEST


def test_results_refuse_forged_keys_with_a_warning_naming_each(s3: S3, tmp_path: Path) -> None:
    sub, (run_id,) = _submission(s3, 1)
    prefix = LAYOUT.outputs(run_id)
    s3.put_bytes(prefix + "ok/metrics.json", b"{}")
    forged = [prefix + "../../../../escaped.txt", prefix + "a/../../../../../escaped2.txt",
              prefix + "/tmp/absolute.txt", prefix + "a//b.txt", prefix + "./dot.txt"]
    for key in forged:
        s3.put_bytes(key, b"pwned")
    assert {o["Key"] for o in s3.objects(prefix)} >= set(forged)  # S3 (moto) keeps such keys as they are
    work = tmp_path / "w"
    dest = work / "dest"
    warned: list[str] = []
    done = tracking.download_results(s3, WHERE, [run_id], dest, warn=warned.append)
    assert done.fetched == 1 and sorted(done.refused) == sorted(forged)
    for key in forged:
        assert any(repr(f"s3://{BUCKET}/{key}") in line for line in warned), key
    # Nothing was written anywhere but DEST/<run-id>/ok/metrics.json.
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        f"w/dest/{run_id}/ok/metrics.json"]
    assert not Path("/tmp/absolute.txt").exists()

    # Through the CLI: exit 0 (the good files are there), a warning per refused key on stderr.
    result = CliRunner().invoke(app, ["results", sub, "--dest", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: refused the key") == len(forged)
    assert (tmp_path / "cli" / run_id / "ok" / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "cli" in p.parts) == ["metrics.json"]


def test_a_run_list_naming_paths_or_other_submissions_is_not_followed(s3: S3, tmp_path: Path) -> None:
    sub, (run_id,) = _submission(s3, 1)
    other, (other_run,) = _submission(s3, 1, job="other")
    for forged in ("../../x", "../../../tmp/x"):
        s3.put_json(LAYOUT.status(forged), {"run_id": forged, "state": "succeeded"})
        s3.put_bytes(LAYOUT.outputs(forged) + "f.txt", b"pwned")
    s3.put_bytes(LAYOUT.outputs(run_id) + "f.txt", b"mine")
    s3.put_bytes(LAYOUT.outputs(other_run) + "f.txt", b"theirs")
    s3.put_json(LAYOUT.queued(sub), {"runs": [run_id, "../../x", "../../../tmp/x", other_run]})
    warned: list[str] = []
    assert tracking.runs_of(s3, WHERE, sub, warn=warned.append) == [run_id]
    assert len(warned) == 3 and all("is not a run id of " + sub in w for w in warned)
    assert "'../../x'" in warned[0] and repr(other_run) in warned[2]

    dest = tmp_path / "w" / "dest"
    result = CliRunner().invoke(app, ["results", sub, "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("is not a run id of") == 3
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in written if not p.startswith("home/")] == [f"w/dest/{run_id}/f.txt"]  # home: SUBMITTER_HOME

    # A run id given by hand is checked too: a path is not a run, whatever S3 holds under it.
    with pytest.raises(UsageError, match="no run, submission or job"):
        tracking.resolve(s3, WHERE, "../../x")
    refused: list[str] = []
    roots, jobs = tracking.plan_downloads(s3, WHERE, ["../../x"], dest, warn=refused.append)
    assert (roots, jobs) == ([], []) and refused == ["'../../x' is not a run id: its outputs are not downloaded"]
    result = CliRunner().invoke(app, ["logs", "../../x"])
    assert result.exit_code == 2 and "not a run id" in result.output
    s3.put_bytes(LAYOUT.agent_log("../../x"), b"forged")
    assert "forged" not in CliRunner().invoke(app, ["logs", "../../x", "--agent"]).output
