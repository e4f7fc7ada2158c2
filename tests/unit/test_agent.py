"""The on-instance agent's pure parts: status documents and their transitions, retry decisions, limits, log
chunk numbering, aws CLI answers, docker arguments, and IMDSv2 token handling against a local server.

The agent is a standalone script (it runs on the instance's python3), so it is imported by path.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

AGENT_PATH = Path(__file__).resolve().parents[2] / "submitter" / "boot" / "agent.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("submitter_agent_under_test", AGENT_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


agent = _load()

SUB: dict[str, Any] = {
    "submission_id": "exp1-20261126-070000-abc123", "job": "exp1", "image": "reg/train@sha256:" + "a" * 64,
    "command": ["python", "train.py"], "volume_mount": "/data", "outputs": "/outputs",
    "checkpoints": "/checkpoints", "gpus": "auto", "max_runtime": 1800, "max_cost": 1.0,
    "retries": {"on_interruption": 3, "on_failure": 1}, "grace_seconds": 90,
}


# ----------------------------------------------------------------------------------------- the file itself


def test_agent_is_python_39_syntax_and_stdlib_only() -> None:
    source = AGENT_PATH.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 9))  # a `match` or 3.10+ grammar fails here
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    # `X | None` is only safe on 3.9 because annotations are never evaluated.
    assert "from __future__ import annotations" in source


# ----------------------------------------------------------------------------------------- status documents


def test_first_attempt_starts_from_the_queued_document() -> None:
    queued = {"run_id": "r", "state": "queued", "attempt": 1, "interruptions": 0, "failures": 0,
              "created_at": "2026-11-26T07:00:00Z"}
    doc, lost = agent.begin_attempt(queued, {"instance_id": "i-1", "price": 0.03}, "2026-11-26T07:01:00Z")
    assert not lost
    assert doc["state"] == "starting" and doc["attempt"] == 1 and doc["interruptions"] == 0
    assert doc["instance_id"] == "i-1" and doc["created_at"] == "2026-11-26T07:00:00Z"
    assert queued["state"] == "queued"  # the input is not changed


def test_a_resumed_attempt_keeps_counters_and_clears_the_last_end() -> None:
    interrupted = {"state": "interrupted", "attempt": 2, "interruptions": 2, "failures": 0, "cost": 0.5,
                   "started_at": "x", "ended_at": "y", "exit_code": 143, "reason": "spot", "instance_id": "i-1"}
    doc, lost = agent.begin_attempt(interrupted, {"instance_id": "i-2"}, "now")
    assert not lost
    assert doc["attempt"] == 3 and doc["interruptions"] == 2 and doc["cost"] == 0.5
    assert "ended_at" not in doc and "exit_code" not in doc and "reason" not in doc
    assert doc["instance_id"] == "i-2"


@pytest.mark.parametrize("state", ["starting", "running"])
def test_an_attempt_that_never_reported_its_end_counts_as_an_interruption(state: str) -> None:
    doc, lost = agent.begin_attempt({"state": state, "attempt": 1, "interruptions": 0, "started_at": "x"},
                                    {}, "now")
    assert lost and doc["interruptions"] == 1 and doc["attempt"] == 2


def test_update_status_removes_fields_given_as_none() -> None:
    doc = agent.update_status({"state": "running", "reason": "old", "cost": 1}, "succeeded", reason=None, cost=2)
    assert doc == {"state": "succeeded", "cost": 2}


# ----------------------------------------------------------------------------------------- endings


RETRIES = {"on_interruption": 2, "on_failure": 1}


def test_exit_zero_succeeds_and_deletes() -> None:
    state, fields, action = agent.decide_end(agent.Ending("exited", 0), {"failures": 0}, RETRIES)
    assert (state, action) == ("succeeded", "delete") and fields["exit_code"] == 0


def test_nonzero_exit_is_retried_while_failures_are_below_on_failure() -> None:
    state, fields, action = agent.decide_end(agent.Ending("exited", 3), {"failures": 0}, RETRIES)
    assert (state, action) == ("queued", "release") and fields["failures"] == 1
    state, fields, action = agent.decide_end(agent.Ending("exited", 3), {"failures": 1}, RETRIES)
    assert (state, action) == ("failed", "delete")
    assert fields == {"reason": "exit code 3", "exit_code": 3}


def test_spot_notice_requeues_until_interruptions_exceed_the_retries() -> None:
    state, fields, action = agent.decide_end(agent.Ending("spot", 143, "notice"), {"interruptions": 1}, RETRIES)
    assert (state, action, fields["interruptions"]) == ("interrupted", "release", 2)
    state, fields, action = agent.decide_end(agent.Ending("spot", 143, "notice"), {"interruptions": 2}, RETRIES)
    assert (state, action) == ("failed", "delete")
    assert fields["reason"] == "interrupted 3 times; retries.on_interruption is 2"


def test_cancel_and_limits_are_final() -> None:
    assert agent.decide_end(agent.Ending("cancel", 143, "cancelled"), {}, RETRIES)[::2] == ("cancelled", "delete")
    state, fields, action = agent.decide_end(
        agent.Ending("limit", 143, "max_runtime 30m reached"), {"failures": 0}, RETRIES)
    assert (state, action, fields["reason"]) == ("failed", "delete", "max_runtime 30m reached")
    state, _, action = agent.decide_end(agent.Ending("setup", None, "image pull refused: x"), {}, RETRIES)
    assert (state, action) == ("failed", "delete")


def test_interruption_reason() -> None:
    assert agent.interruption_reason(3, 3) is None
    assert agent.interruption_reason(4, 3) == "interrupted 4 times; retries.on_interruption is 3"


# ----------------------------------------------------------------------------------------- limits and cost


@pytest.mark.parametrize(("seconds", "text"), [(1800, "30m"), (5400, "1h30m"), (45, "45s"), (3600, "1h"),
                                               (90, "1m30s"), (0, "0s")])
def test_human_duration(seconds: int, text: str) -> None:
    assert agent.human_duration(seconds) == text


def test_limit_reason() -> None:
    assert agent.limit_reason(10, 0.1, 1800, 1.0) is None
    assert agent.limit_reason(1800, 0.1, 1800, 1.0) == "max_runtime 30m reached"
    assert agent.limit_reason(10, 1.0, 1800, 1.0) == "max_cost $1.00 reached"
    assert agent.limit_reason(10**6, 10**6, None, None) is None


def test_cost_and_deadman() -> None:
    assert agent.cost_of(0.36, 1800) == pytest.approx(0.18)
    assert agent.deadman_minutes(1800, 45) == 45  # (1800 + 900) / 60
    assert agent.deadman_minutes(1801, 45) == 46
    assert agent.deadman_minutes(None, 60) == 60


def test_stop_timeout_is_cut_short_by_a_spot_notice() -> None:
    now = datetime(2026, 11, 26, 7, 0, tzinfo=timezone.utc)
    assert agent.stop_timeout(90, None, now) == 90
    assert agent.stop_timeout(90, now + timedelta(seconds=120), now) == 90
    assert agent.stop_timeout(90, now + timedelta(seconds=60), now) == 60 - agent.NOTICE_RESERVE
    assert agent.stop_timeout(90, now, now) == 5
    assert agent.parse_iso("2026-11-26T07:02:00Z") == now + timedelta(minutes=2)
    assert agent.parse_iso("soon") is None


# ----------------------------------------------------------------------------------------- logs


def test_chunk_numbering_continues_after_earlier_attempts() -> None:
    assert agent.next_chunk_number([]) == 0
    keys = ["p/runs/r/logs/chunks/000000.log", "p/runs/r/logs/chunks/000011.log", "p/runs/r/logs/chunks/x.txt"]
    assert agent.next_chunk_number(keys) == 12
    assert agent.chunk_name(12) == "000012.log"


def test_split_chunk_ships_whole_lines_until_the_end() -> None:
    assert agent.split_chunk(b"a\nb\npart", final=False) == (b"a\nb\n", b"part")
    assert agent.split_chunk(b"part", final=False) == (b"", b"part")
    assert agent.split_chunk(b"a\npart", final=True) == (b"a\npart", b"")
    huge = b"x" * agent.CHUNK_HOLD
    assert agent.split_chunk(huge, final=False) == (huge, b"")


def test_log_shipper_uploads_numbered_chunks(tmp_path: Path) -> None:
    uploads: list[tuple[str, bytes]] = []

    class FakeCloud:
        def put_bytes(self, data: bytes, *parts: str, content_type: str = "") -> None:
            uploads.append(("/".join(parts), data))

    log_file = tmp_path / "container.log"
    log_file.write_bytes(b"earlier attempt\n")
    shipper = agent.LogShipper(FakeCloud(), "r", log_file, 5)
    with log_file.open("ab") as f:
        f.write(b"epoch 1\nepo")
    shipper.ship()
    with log_file.open("ab") as f:
        f.write(b"ch 2\n")
    shipper.ship()
    shipper.ship()  # nothing new: nothing uploaded
    assert uploads == [("runs/r/logs/chunks/000005.log", b"epoch 1\n"), ("runs/r/logs/chunks/000006.log", b"epoch 2\n")]


# ----------------------------------------------------------------------------------------- aws CLI answers


def test_parse_json_and_spot_price() -> None:
    assert agent.parse_json("") == {}
    assert agent.parse_json('{"Messages": []}\n') == {"Messages": []}
    answer = {"SpotPriceHistory": [
        {"SpotPrice": "0.031", "Timestamp": "2026-11-26T06:00:00+00:00"},
        {"SpotPrice": "0.042", "Timestamp": "2026-11-26T07:00:00+00:00"},
    ]}
    assert agent.parse_spot_price(answer) == 0.042
    assert agent.parse_spot_price({}) is None
    assert agent.parse_spot_price({"SpotPriceHistory": [{"SpotPrice": "n/a"}]}) is None


def test_result_last_line_and_not_found() -> None:
    refused = agent.Result(1, "", "Error response from daemon: pull access denied\n"
                                  "unauthorized: authentication required\n")
    assert refused.last_line() == "unauthorized: authentication required"
    assert agent.Result(2, "", "").last_line() == "exit code 2"
    assert agent.not_found(agent.Result(1, "", "An error occurred (404) when calling the HeadObject operation"))
    assert not agent.not_found(agent.Result(1, "", "An error occurred (403) Forbidden"))


def test_cloud_keys_and_uris() -> None:
    cloud = agent.Cloud("us-east-1", "bucket", "/submitter/")
    assert cloud.uri("runs", "r", "status.json") == "s3://bucket/submitter/runs/r/status.json"
    assert agent.Cloud("us-east-1", "bucket", "").key("runs", "r") == "runs/r"


# ----------------------------------------------------------------------------------------- container


def test_data_path_maps_targets_below_the_data_dir(tmp_path: Path) -> None:
    assert agent.data_path("/data/train", "/data", tmp_path) == tmp_path / "train"
    assert agent.data_path("/data/", "/data", tmp_path) == tmp_path
    with pytest.raises(ValueError, match="not under volume_mount"):
        agent.data_path("/etc/passwd", "/data", tmp_path)
    with pytest.raises(ValueError, match="not under"):
        agent.data_path("/database", "/data", tmp_path)
    with pytest.raises(ValueError, match="leaves"):
        agent.data_path("/data/../etc", "/data", tmp_path)


def test_container_env_carries_the_contract_variables() -> None:
    env = agent.container_env(SUB, {"run_id": "r-0", "env": {"LR": 0.1}}, 2)
    assert env == {"LR": "0.1", "SUBMITTER_RUN_ID": "r-0", "SUBMITTER_SUBMISSION_ID": SUB["submission_id"],
                   "SUBMITTER_ATTEMPT": "2", "SUBMITTER_DATA_DIR": "/data", "SUBMITTER_OUTPUT_DIR": "/outputs",
                   "SUBMITTER_CHECKPOINT_DIR": "/checkpoints"}


def test_docker_run_args(tmp_path: Path) -> None:
    work, run_dir = tmp_path, tmp_path / "runs" / "r-0"
    args = agent.docker_run_args(SUB, "r-0", "i-1", work, run_dir, {"LR": "0.1"}, tmp_path / "s.env", "all")
    assert args[:4] == ["docker", "run", "--detach", "--name"] and args[4] == "submitter-r-0"
    assert f"{work}/data:/data" in args and f"{run_dir}/outputs:/outputs" in args
    assert f"{run_dir}/checkpoints:/checkpoints" in args
    assert "submitter.run=r-0" in args and "submitter.instance=i-1" in args
    assert args[args.index("--env-file") + 1] == str(tmp_path / "s.env")
    assert args[args.index("--gpus") + 1] == "all"
    assert args[-3:] == [SUB["image"], "python", "train.py"]
    bare = agent.docker_run_args({**SUB, "checkpoints": None, "command": "echo hi"}, "r", "i", work, run_dir,
                                 {}, None, None)
    assert "--gpus" not in bare and "--env-file" not in bare and not any("checkpoints" in a for a in bare)
    assert bare[-3:] == ["/bin/sh", "-c", "echo hi"]


def test_gpu_flag() -> None:
    nvidia = {"nvidia": {"path": "nvidia-container-runtime"}, "runc": {}}
    assert agent.gpu_flag("auto", nvidia) == "all"
    assert agent.gpu_flag("auto", {"runc": {}}) is None
    assert agent.gpu_flag(0, nvidia) is None
    assert agent.gpu_flag(2, nvidia) == "2"


# ----------------------------------------------------------------------------------------- IMDSv2


class FakeImds:
    """A tiny IMDSv2: tokens required, a revocable token, a switchable spot notice."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.puts = 0
        self.notice: dict[str, str] | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
                pass

            def _send(self, code: int, body: bytes = b"") -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._send(400)
                    return
                fake.puts += 1
                token = f"t{fake.puts}"
                fake.tokens.add(token)
                self._send(200, token.encode())

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") not in fake.tokens:
                    self._send(401)
                elif self.path == "/latest/meta-data/instance-type":
                    self._send(200, b"c5.large")
                elif self.path == "/latest/meta-data/spot/instance-action" and fake.notice:
                    self._send(200, json.dumps(fake.notice).encode())
                else:
                    self._send(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_imds_token_is_fetched_once_and_reused(imds: FakeImds) -> None:
    client = agent.Imds(imds.endpoint)
    assert client.get("meta-data/instance-type") == "c5.large"
    assert client.get("/meta-data/instance-type") == "c5.large"
    assert imds.puts == 1


def test_imds_404_is_none_and_a_revoked_token_is_renewed_once(imds: FakeImds) -> None:
    client = agent.Imds(imds.endpoint)
    assert client.spot_action() is None
    imds.tokens.clear()  # e.g. the token expired
    imds.notice = {"action": "terminate", "time": "2026-11-26T07:02:00Z"}
    assert client.spot_action() == {"action": "terminate", "time": "2026-11-26T07:02:00Z"}
    assert imds.puts == 2


def test_imds_endpoint_comes_from_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/")
    assert agent.Imds().base == "http://127.0.0.1:9"
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    assert agent.Imds().base == "http://169.254.169.254"


# ----------------------------------------------------------------------------------------- never silently


class RecordingCloud:
    """Stands in for the aws CLI: documents written are kept, every other call succeeds quietly."""

    def __init__(self) -> None:
        self.written: dict[str, dict[str, Any]] = {}

    def put_json(self, doc: dict[str, Any], *parts: str) -> None:
        self.written["/".join(parts)] = doc

    def aws(self, *args: str, **kwargs: Any) -> Any:
        return agent.Result(0, "", "")


class RecordingLease:
    def __init__(self) -> None:
        self.actions: list[str] = []

    def settle(self, action: str) -> None:
        self.actions.append(action)

    def release(self) -> None:
        self.actions.append("release")


def _agent_with(cloud: RecordingCloud, retries: dict[str, int]) -> Any:
    args = agent.parse_args(["--submission", "s", "--bucket", "b", "--prefix", "p", "--group", "g",
                             "--instance-id", "i-1", "--region", "us-east-1"])
    worker = agent.Agent(args)
    worker.cloud = cloud
    worker.sub = {**SUB, "retries": retries}
    return worker


@pytest.mark.parametrize(("on_failure", "state", "action"), [(0, "failed", "delete"), (1, "queued", "release")])
def test_an_agent_error_settles_the_current_run_and_reports_the_instance(
        tmp_path: Path, on_failure: int, state: str, action: str) -> None:
    cloud = RecordingCloud()
    worker = _agent_with(cloud, {"on_interruption": 3, "on_failure": on_failure})
    lease = RecordingLease()

    def serve() -> int:
        worker.current = agent.RunState("r-0", {"run_id": "r-0"}, lease, {"state": "running", "failures": 0},
                                        tmp_path / "r-0", "submitter-r-0")
        raise RuntimeError("boom")

    worker.serve = serve
    assert worker.main() == 3
    status = cloud.written["runs/r-0/status.json"]
    assert status["state"] == state and status["reason"] == "agent error: RuntimeError: boom"
    assert lease.actions == [action]
    report = cloud.written["submissions/s/instances/i-1.json"]
    assert report["state"] == "agent-error" and report["runs"] == [{"run_id": "r-0", "state": state}]


def test_a_message_that_names_no_run_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    deleted: list[str] = []

    class Lease:
        def __init__(self, cloud: Any, receipt: str) -> None:
            self.receipt = receipt

        def delete(self) -> None:
            deleted.append(self.receipt)

    worker = _agent_with(RecordingCloud(), {})
    monkeypatch.setattr(agent, "Lease", Lease)  # the real one would start a thread calling SQS
    assert worker.handle({"Body": "not json", "ReceiptHandle": "rh-1"}) is None
    assert deleted == ["rh-1"]


def test_a_lease_extends_the_visibility_and_its_release_is_the_last_word(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []

    class SqsCloud:
        def sqs(self, action: str, *args: str, timeout: float = 60) -> dict[str, Any]:
            calls.append((action, *args))
            return {}

    monkeypatch.setattr(agent, "VISIBILITY_EVERY", 0.02)
    lease = agent.Lease(SqsCloud(), "rh-1")
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    lease.release()
    count = len(calls)
    time.sleep(0.1)
    assert len(calls) == count  # nothing after the release
    assert calls[0] == ("change-message-visibility", "--receipt-handle", "rh-1", "--visibility-timeout", "300")
    assert calls[-1] == ("change-message-visibility", "--receipt-handle", "rh-1", "--visibility-timeout", "0")


def test_a_missing_data_volume_is_a_boot_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(agent, "DEVICES", (str(tmp_path / "sdf"), str(tmp_path / "xvdf")))
    monkeypatch.setattr(agent, "DEVICE_WAIT", 0.1)
    monkeypatch.setattr(agent, "WORK_BASE", tmp_path / "work")
    with pytest.raises(agent.BootError, match=r"^data volume .*/sdf did not mount: no .*/sdf or .*/xvdf after 0 s$"):
        agent.prepare_volume("i-1")
