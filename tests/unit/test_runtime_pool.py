"""The pool side of the runtime: IMDSv2 token handling against a local server, the aws CLI store's answers,
`docker run` arguments, log chunks, the SQS lease, the data volume, and an agent error that still settles the
run and reports the instance (submitter/runtime/{imds,store,docker,logs,pool,host}.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from runtime_memory import MemoryStore

from submitter import contract
from submitter.contract import Layout, Status
from submitter.runtime import docker, host, index, pool, rules
from submitter.runtime.commands import Result, not_found, parse_json
from submitter.runtime.imds import Imds
from submitter.runtime.lifecycle import Attempt
from submitter.runtime.logs import LogShipper
from submitter.runtime.seams import Process, Settlement
from submitter.runtime.store import CliStore

SUB: dict[str, Any] = {
    "submission_id": "s", "job": "exp1", "image": "reg/train@sha256:" + "a" * 64,
    "command": ["python", "train.py"], "volume_mount": "/data", "outputs": "/outputs",
    "checkpoints": "/checkpoints", "gpus": "auto", "max_runtime": 1800, "max_cost": 1.0,
    "retries": {"on_interruption": 3, "on_failure": 1}, "grace_seconds": 90,
}


# ----------------------------------------------------------------------------------------- logs


def test_log_shipper_uploads_numbered_chunks(tmp_path: Path) -> None:
    store = MemoryStore()
    log_file = tmp_path / "container.log"
    log_file.write_bytes(b"earlier attempt\n")
    shipper = LogShipper(store, Layout("p"), "r", log_file, 5)
    with log_file.open("ab") as f:
        f.write(b"epoch 1\nepo")
    shipper.ship()
    with log_file.open("ab") as f:
        f.write(b"ch 2\n")
    shipper.ship()
    shipper.ship()  # nothing new: nothing uploaded
    assert store.objects == {"p/runs/r/logs/chunks/000005.log": b"epoch 1\n",
                             "p/runs/r/logs/chunks/000006.log": b"epoch 2\n"}
    shipper.finish()
    assert store.objects["p/runs/r/logs/container.log"] == b"earlier attempt\nepoch 1\nepoch 2\n"


# ----------------------------------------------------------------------------------------- aws CLI answers


def test_parse_json_result_last_line_and_not_found() -> None:
    assert parse_json("") == {}
    assert parse_json('{"Messages": []}\n') == {"Messages": []}
    refused = Result(1, "", "Error response from daemon: pull access denied\nunauthorized: authentication required\n")
    assert refused.last_line() == "unauthorized: authentication required"
    assert Result(2, "", "").last_line() == "exit code 2"
    assert not_found(Result(1, "", "An error occurred (404) when calling the HeadObject operation"))
    assert not not_found(Result(1, "", "An error occurred (403) Forbidden"))


def test_store_uris_come_from_the_layout() -> None:
    store = CliStore("us-east-1", "bucket")
    assert store.uri(Layout("/submitter/").status("r")) == "s3://bucket/submitter/runs/r/status.json"
    assert Layout("").run("r") == "runs/r/"


def test_secrets_are_fetched_ten_names_at_a_time_and_must_all_exist() -> None:
    asked: list[list[str]] = []

    class Ssm(MemoryStore):  # type: ignore[misc,valid-type]
        def parameters(self, names: list[str]) -> list[tuple[str, str]]:
            asked.append(names)
            return [(n, "v") for n in names if not n.endswith("MISSING")]

    names = [f"S{i}" for i in range(12)]
    assert Ssm().secrets(names, "/submitter/s") == {n: "v" for n in names}
    assert [len(a) for a in asked] == [10, 2] and asked[0][0] == "/submitter/s/S0"
    with pytest.raises(ValueError, match="MISSING not found in SSM under /submitter/s/"):
        Ssm().secrets(["A", "MISSING"], "submitter/s/")


# ----------------------------------------------------------------------------------------- container


def test_docker_run_args(tmp_path: Path) -> None:
    work, run_dir = tmp_path, tmp_path / "runs" / "r-0"
    args = docker.docker_run_args(SUB, "r-0", "i-1", work, run_dir, {"LR": "0.1"}, tmp_path / "s.env", "all")
    assert args[:4] == ["docker", "run", "--detach", "--name"] and args[4] == "submitter-r-0"
    assert f"{work}/data:/data" in args and f"{run_dir}/outputs:/outputs" in args
    assert f"{run_dir}/checkpoints:/checkpoints" in args
    assert f"{run_dir}/metrics:/submitter-metrics" in args  # its own directory: not logs/, the agent's log
    assert "submitter.run=r-0" in args and "submitter.instance=i-1" in args
    assert args[args.index("--env-file") + 1] == str(tmp_path / "s.env")
    assert args[args.index("--gpus") + 1] == "all"
    assert args[-3:] == [SUB["image"], "python", "train.py"]
    bare = docker.docker_run_args({**SUB, "checkpoints": None, "command": "echo hi"}, "r", "i", work, run_dir,
                                  {}, None, None)
    assert "--gpus" not in bare and "--env-file" not in bare and not any("checkpoints" in a for a in bare)
    assert bare[-3:] == ["/bin/sh", "-c", "echo hi"]


def test_gpu_flag() -> None:
    nvidia = {"nvidia": {"path": "nvidia-container-runtime"}, "runc": {}}
    assert docker.gpu_flag("auto", nvidia) == "all"
    assert docker.gpu_flag("auto", {"runc": {}}) is None
    assert docker.gpu_flag(0, nvidia) is None
    assert docker.gpu_flag(2, nvidia) == "2"


def test_secrets_env_file_is_private_and_refuses_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "s.env"
    docker.write_env_file(path, {"A": "1", "B": "two words"})
    assert path.read_text() == "A=1\nB=two words\n" and path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="line break"):
        docker.write_env_file(path, {"A": "1\n2"})


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
    client = Imds(imds.endpoint)
    assert client.get("meta-data/instance-type") == "c5.large"
    assert client.get("/meta-data/instance-type") == "c5.large"
    assert client.placement() == {"instance_type": "c5.large", "availability_zone": "unknown"}
    assert imds.puts == 1


def test_imds_404_is_none_and_a_revoked_token_is_renewed_once(imds: FakeImds) -> None:
    client = Imds(imds.endpoint)
    assert client.spot_action() is None
    imds.tokens.clear()  # e.g. the token expired
    imds.notice = {"action": "terminate", "time": "2026-11-26T07:02:00Z"}
    assert client.spot_action() == {"action": "terminate", "time": "2026-11-26T07:02:00Z"}
    assert imds.puts == 2


def test_imds_endpoint_comes_from_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/")
    assert Imds().base == "http://127.0.0.1:9"
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    assert Imds().base == "http://169.254.169.254"


# ----------------------------------------------------------------------------------------- never silently


class IdleProcess(Process):
    """A process seam that never started: directories only."""

    def __init__(self, root: Path) -> None:
        self.data_dir, self.outputs_dir = root / "data", root / "outputs"
        self.checkpoints_dir, self.logs_dir = root / "checkpoints", root / "logs"
        self.metrics_dir = root / "metrics"


class RecordingSettlement(Settlement):
    def __init__(self) -> None:
        self.actions: list[str] = []

    def settle(self, state: str, action: str) -> None:
        self.actions.append(action)

    def release(self) -> None:
        self.actions.append("release")


def _agent(store: Any, retries: dict[str, int], submission: str = "s") -> pool.Agent:
    args = pool.parse_args(["--submission", submission, "--bucket", "b", "--prefix", "p", "--group", "g",
                            "--instance-id", "i-1", "--region", "us-east-1"])
    worker = pool.Agent(args, store=store, imds=Imds("http://127.0.0.1:9"))
    worker.host.sub = {**SUB, "retries": retries}
    return worker


@pytest.mark.parametrize(("on_failure", "state", "action"), [(0, "failed", "delete"), (1, "queued", "release")])
def test_an_agent_error_settles_the_current_run_and_reports_the_instance(
        tmp_path: Path, on_failure: int, state: str, action: str) -> None:
    store = MemoryStore("b")
    worker = _agent(store, {"on_interruption": 3, "on_failure": on_failure})
    settlement = RecordingSettlement()

    def serve() -> int:
        status = Status.from_json({"run_id": "r-0", "state": "running", "failures": 0})
        worker.current = Attempt(worker.host, {"run_id": "r-0"}, status, IdleProcess(tmp_path), settlement)
        raise RuntimeError("boom")

    worker.serve = serve  # type: ignore[method-assign]
    assert worker.main() == pool.EXIT_AGENT_ERROR
    status = store.json("p/runs/r-0/status.json")
    assert status["state"] == state and status["reason"] == "agent error: RuntimeError: boom"
    assert status["instance_id"] == "i-1"
    assert settlement.actions == [action]
    report = store.json("p/submissions/s/instances/i-1.json")
    assert report["state"] == contract.AGENT_ERROR and report["runs"] == [{"run_id": "r-0", "state": state}]
    # When the worker started, so the submit side can count this instance's hours (placement/history.py).
    assert contract.parse_iso(report["booted_at"]) <= contract.parse_iso(report["time"])  # type: ignore[operator]


def test_a_message_that_names_no_run_or_a_finished_run_is_deleted() -> None:
    sub = "exp1-20261130-120000-abcdef"
    store = MemoryStore("b")
    worker = _agent(store, {}, submission=sub)
    worker.queue_url = "q"
    assert worker.handle({"Body": "not json", "ReceiptHandle": "rh-1"}) is None
    store.put_json(f"p/runs/{sub}-9/status.json", {"run_id": f"{sub}-9", "state": "succeeded"})
    assert worker.handle({"Body": json.dumps({"run_id": f"{sub}-9"}), "ReceiptHandle": "rh-2"}) is None
    assert store.sqs_calls == [("delete", "rh-1"), ("delete", "rh-2")]


def test_a_message_naming_a_run_of_another_submission_is_dropped_before_it_becomes_a_path() -> None:
    sub = "exp1-20261130-120000-abcdef"
    store = MemoryStore("b")
    worker = _agent(store, {}, submission=sub)
    worker.queue_url = "q"
    for number, forged in enumerate(["../../x", "exp1-20261130-120000-000000-0", f"{sub}-0/../../../x"]):
        assert worker.handle({"Body": json.dumps({"run_id": forged}), "ReceiptHandle": f"rh-{number}"}) is None
    assert store.sqs_calls == [("delete", "rh-0"), ("delete", "rh-1"), ("delete", "rh-2")]
    assert not any("status.json" in key for key in store.objects)  # not even a status was written


def test_a_lease_extends_the_visibility_and_its_release_is_the_last_word() -> None:
    store = MemoryStore()
    lease = pool.Lease(store, "q", "rh-1", every=0.02)
    deadline = time.monotonic() + 5
    while len(store.sqs_calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    lease.release()
    count = len(store.sqs_calls)
    time.sleep(0.1)
    assert len(store.sqs_calls) == count  # nothing after the release
    assert store.sqs_calls[0] == ("change-visibility", "rh-1", str(contract.VISIBILITY_TIMEOUT_S))
    assert store.sqs_calls[-1] == ("change-visibility", "rh-1", "0")


def test_a_missing_data_volume_is_a_boot_error(tmp_path: Path) -> None:
    devices = (str(tmp_path / "sdf"), str(tmp_path / "xvdf"))
    with pytest.raises(host.BootError, match=r"^data volume .*/sdf did not mount: no .*/sdf or .*/xvdf after 0 s$"):
        host.prepare_volume("i-1", tmp_path / "work", devices, 0.1)


class EndlessProcess(IdleProcess):
    """A command that never ends: `wait` takes all the time it is given."""

    def wait(self, timeout: float) -> int | None:
        time.sleep(timeout)
        return None


def test_a_spot_notice_is_seen_within_a_second_not_at_the_next_tick(tmp_path: Path, imds: FakeImds) -> None:
    store = MemoryStore("b")
    worker = _agent(store, {"on_interruption": 3})
    worker.host.imds = Imds(imds.endpoint)
    assert worker.host.tick == 5.0
    status = Status.from_json({"run_id": "r-0", "state": "running", "failures": 0})
    attempt = Attempt(worker.host, {"run_id": "r-0"}, status, EndlessProcess(tmp_path), RecordingSettlement())
    threading.Timer(0.3, lambda: setattr(imds, "notice", {"action": "terminate",
                                                          "time": "2026-11-26T07:02:00Z"})).start()
    start = time.monotonic()
    code, ending = attempt.wait_tick()
    assert code is None and ending is not None and ending.kind == rules.SPOT
    assert time.monotonic() - start < worker.host.tick - 1  # read every NOTICE_EVERY, not at the tick
    assert attempt.action_time == contract.parse_iso("2026-11-26T07:02:00Z")
    # without a notice a tick still lasts the whole tick, the command's exit being looked for all along
    imds.notice = None
    start = time.monotonic()
    assert attempt.wait_tick() == (None, None) and time.monotonic() - start >= 4.9


def test_a_worker_leaves_without_draining_once_the_index_shows_every_run_ended() -> None:
    sub = "exp1-20261130-120000-abcdef"
    layout = Layout("p")
    store = MemoryStore("b")
    worker = _agent(store, {}, submission=sub)
    runs = [f"{sub}-{i}" for i in range(3)]
    assert not worker.all_ended()  # nothing queued yet: nothing to go by
    store.put_json(layout.queued(sub), {"runs": runs})
    statuses = [Status(r, sub, "exp1", contract.QUEUED) for r in runs]
    for status in statuses:
        index.put_status(store, layout, status)
    assert not worker.all_ended()
    ended = [s.evolve(contract.SUCCEEDED, attempt=1, exit_code=0) for s in statuses[:2]]
    for old, new in zip(statuses, ended, strict=False):
        index.put_status(store, layout, new, previous=old)
    assert not worker.all_ended()  # one run is still queued: it may yet come back to this worker
    running = statuses[2].evolve(contract.RUNNING, attempt=1)
    index.put_status(store, layout, running, previous=statuses[2])
    assert not worker.all_ended()
    index.put_status(store, layout, running.evolve(contract.INTERRUPTED), previous=running)
    assert not worker.all_ended()  # interrupted: the group's replacement takes it again
    failed = running.evolve(contract.FAILED, attempt=2, exit_code=1)
    index.put_status(store, layout, failed, previous=running.evolve(contract.INTERRUPTED))
    assert worker.all_ended() and worker.ended
    # an entry that ties with the latest (two writers disagree) is not settled: drain as usual
    store.put_bytes(layout.index_entry(sub, runs[2], index.entry(failed.evolve(contract.CANCELLED))), b"")
    assert not worker.all_ended()
