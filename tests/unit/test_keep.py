"""limits.keep_on_failure (docs/keep.md): the window arithmetic, the spec and option, the keep-until bounds, what
`status` shows, and the worker's Keeper against the in-memory store (tag, leave the group, wait, end)."""

from __future__ import annotations

import importlib.util
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from submitter import contract, keep
from submitter.contract import Layout, Status
from submitter.errors import UsageError
from submitter.runtime import keep as runtime_keep
from submitter.runtime.lifecycle import Attempt
from submitter.runtime.pool import PoolHost
from submitter.runtime.rules import DELETE, RELEASE
from submitter.runtime.seams import Process, Settlement
from submitter.spec import load
from submitter.spec.models import Limits

_memory = importlib.util.spec_from_file_location("runtime_memory", Path(__file__).with_name("runtime_memory.py"))
assert _memory and _memory.loader
runtime_memory = importlib.util.module_from_spec(_memory)
_memory.loader.exec_module(runtime_memory)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------------- the window


def test_the_window_is_what_was_asked_cut_by_max_cost_and_max_runtime() -> None:
    assert runtime_keep.window(1200, 0.5, 0.1, None, 600, 3600) == 1200
    # max_cost $1 at $0.50/h with $0.90 spent: 0.1 / 0.5 h = 720 s left
    assert runtime_keep.window(1200, 0.5, 0.9, 1.0, 600, 3600) == pytest.approx(720)
    # max_runtime 1h, the run took 50 min: 10 min left
    assert runtime_keep.window(1200, 0.5, 0.1, None, 3000, 3600) == pytest.approx(600)
    # under a minute left (or nothing, or overspent): nothing is kept
    assert runtime_keep.window(1200, 0.5, 0.1, None, 3550, 3600) == 0
    assert runtime_keep.window(1200, 0.5, 1.2, 1.0, 60, 3600) == 0
    assert runtime_keep.window(0, 0.5, 0.0, None, 60, 3600) == 0
    # an unknown price (0) cannot be held against max_cost: max_runtime still bounds it
    assert runtime_keep.window(1200, 0.0, 5.0, 1.0, 60, 600) == pytest.approx(540)


def test_the_dead_man_switch_covers_the_window_and_a_margin() -> None:
    assert runtime_keep.deadman_minutes(120) == 2 + contract.KEEP_MARGIN_S // 60
    assert runtime_keep.deadman_minutes(61) == 2 + contract.KEEP_MARGIN_S // 60


def test_keep_on_failure_accepts_0_or_1m_to_24h() -> None:
    assert Limits().keep_on_failure == 0
    assert Limits(keep_on_failure="20m").keep_on_failure == 1200  # type: ignore[arg-type]
    assert Limits(keep_on_failure="0").keep_on_failure == 0  # type: ignore[arg-type]
    for bad in ("30s", "25h", "soon", -5):
        with pytest.raises(ValidationError, match="keep_on_failure"):
            Limits(keep_on_failure=bad)  # type: ignore[arg-type]


def _spec(tmp_path: Path, extra: str = "") -> Any:
    path = tmp_path / "job.yaml"
    path.write_text("name: kj\nimage: {uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/train:v1}\n"
                    "command: [python, train.py]\nresources: {instance_types: [c5.large]" + extra + "}\n")
    return load(path)


def test_the_option_overrides_the_spec_and_batch_is_refused_before_anything(tmp_path: Path) -> None:
    (loaded,) = keep.override([_spec(tmp_path)], "5m")
    assert loaded.spec.limits.keep_on_failure == 300
    assert keep.override([loaded], None)[0] is loaded
    assert keep.override([loaded], "0")[0].spec.limits.keep_on_failure == 0
    with pytest.raises(UsageError, match="--keep-on-failure") as bad:
        keep.override([loaded], "5 minutes")
    assert bad.value.next_step and "20m" in bad.value.next_step
    keep.check_backend([loaded], None)  # the pool: fine
    with pytest.raises(UsageError, match="pool backend only|only be kept on the pool") as refused:
        keep.check_backend([loaded], "batch")
    assert "limits.keep_on_failure" in refused.value.where
    batch_spec = _spec(tmp_path, ", backend: batch")
    keep.check_backend([batch_spec], None)  # nothing asked: nothing refused
    with pytest.raises(UsageError):
        keep.check_backend(keep.override([batch_spec], "5m"), None)


def test_a_keep_until_too_far_out_or_past_is_not_believed() -> None:
    assert contract.keep_until(contract.iso(NOW + timedelta(minutes=20)), NOW) == NOW + timedelta(minutes=20)
    assert contract.keep_until(contract.iso(NOW - timedelta(seconds=1)), NOW) is None
    assert contract.keep_until(contract.iso(NOW + timedelta(days=2)), NOW) is None  # a forged tag
    assert contract.keep_until("never", NOW) is None


def test_status_shows_the_window_and_how_it_ended() -> None:
    until = contract.iso(NOW + timedelta(minutes=20))
    doc = {"run_id": "r", "state": contract.FAILED, contract.KEPT_UNTIL: until}
    assert keep.describe(doc, NOW) == "kept until 12:20 UTC"
    assert contract.kept_window(Status.from_json(doc), NOW) is not None
    assert keep.describe(doc, NOW + timedelta(hours=1)) == "kept until 12:20 UTC (over)"
    ended = {**doc, contract.KEPT_ENDED: contract.iso(NOW + timedelta(minutes=3)),
             contract.KEPT_END_REASON: "cancelled"}
    assert keep.describe(ended, NOW) == "kept until 12:20 UTC (cancelled at 12:03)"
    assert contract.kept_window(Status.from_json(ended), NOW) is None
    assert keep.describe({"run_id": "r", "state": contract.FAILED}) is None


# ------------------------------------------------------------------------------------------- the worker


class KeptStore(runtime_memory.MemoryStore):  # type: ignore[name-defined]
    """The memory store, with the queue depth, the group and the instance's tags."""

    def __init__(self, waiting: int = 0, fail: str = "") -> None:
        super().__init__()
        self.waiting, self.fail = waiting, fail
        self.tags: list[tuple[str, str, str]] = []
        self.detached: list[tuple[str, str, bool]] = []

    def visible_messages(self, queue_url: str) -> int:
        return self.waiting

    def detach(self, group: str, instance_id: str, decrement: bool) -> None:
        if self.fail == "detach":
            raise RuntimeError("AccessDenied")
        self.detached.append((group, instance_id, decrement))

    def tag_instance(self, instance_id: str, key: str, value: str) -> None:
        if self.fail == "tag":
            raise RuntimeError("AccessDenied")
        self.tags.append((instance_id, key, value))


class Clock:
    def __init__(self, on_sleep: Any = None) -> None:
        self.now, self.on_sleep, self.slept = 1000.0, on_sleep, 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += 1
        if self.on_sleep:
            self.on_sleep(self)


def _attempt(store: Any, sub: dict[str, Any] | None = None) -> Attempt:
    layout = Layout("p")
    doc = {"submission_id": "kj-20261130-120000-abcdef", "keep_on_failure": 120, "max_runtime": 3600, **(sub or {})}
    host = PoolHost(store, layout, doc, {"instance_id": "i-1"}, price=0.36)
    status = Status("kj-20261130-120000-abcdef", doc["submission_id"], "kj", contract.FAILED, cost=0.01,
                    exit_code=3, instance_id="i-1")
    attempt = Attempt(host, {"run_id": status.run_id}, status, Process(), Settlement())
    attempt.started = 900.0
    return attempt


def _keeper(attempt: Attempt, clock: Clock, rearmed: list[int]) -> runtime_keep.Keeper:
    return runtime_keep.Keeper(attempt, "submitter-g", "i-1", "https://queue", clock=clock, sleep=clock.sleep,
                               rearm=rearmed.append)


def test_the_worker_tags_itself_leaves_its_group_and_ends_with_the_window() -> None:
    store = KeptStore(waiting=0)
    attempt, clock, rearmed = _attempt(store), Clock(), []  # type: Attempt, Clock, list[int]
    assert _keeper(attempt, clock, rearmed).run()
    run_id = attempt.run_id
    assert store.tags[0][:2] == ("i-1", contract.TAG_KEEP_UNTIL)
    assert store.detached == [("submitter-g", "i-1", True)], "no run waits: the slot is given up"
    assert rearmed == [2 + contract.KEEP_MARGIN_S // 60]
    status = store.json(Layout("p").status(run_id))
    assert status["state"] == contract.FAILED and status[contract.KEPT_END_REASON] == "window over"
    assert status[contract.KEPT_UNTIL] == store.tags[0][2]
    assert status["cost"] == pytest.approx(0.01 + 0.36 * 120 / 3600, abs=1e-5)  # the window is billed to the run
    assert clock.now - 1000.0 == pytest.approx(120, abs=2)
    assert len(store.tags) == 2 and store.tags[1][2] <= status[contract.KEPT_UNTIL], "the tag says it is over"


def test_runs_waiting_keep_the_slot_and_a_cancel_marker_ends_the_window_early() -> None:
    store = KeptStore(waiting=2)
    attempt = _attempt(store)

    def cancel_after_a_while(clock: Clock) -> None:
        if clock.slept == 3:
            store.put_json(Layout("p").run_cancel(attempt.run_id), {"at": "now"})

    clock, rearmed = Clock(cancel_after_a_while), []  # type: Clock, list[int]
    assert _keeper(attempt, clock, rearmed).run()
    assert store.detached == [("submitter-g", "i-1", False)], "runs wait: the group starts a replacement"
    status = store.json(Layout("p").status(attempt.run_id))
    assert status[contract.KEPT_END_REASON] == "cancelled"
    assert clock.now - 1000.0 < 60


@pytest.mark.parametrize("fail", ["tag", "detach"])
def test_nothing_is_kept_when_the_worker_cannot_tag_itself_or_leave_its_group(fail: str) -> None:
    store = KeptStore(fail=fail)
    attempt, rearmed = _attempt(store), []  # type: Attempt, list[int]
    assert not _keeper(attempt, Clock(), rearmed).run()
    assert rearmed == [] and store.detached == []
    assert Layout("p").status(attempt.run_id) not in store.objects
    if fail == "detach":
        assert [t[1] for t in store.tags] == [contract.TAG_KEEP_UNTIL] * 2, "the tag is taken back (set to now)"


def test_nothing_is_kept_when_max_cost_leaves_under_a_minute() -> None:
    store = KeptStore()
    attempt, rearmed = _attempt(store, {"max_cost": 0.011}), []  # type: Attempt, list[int]
    assert not _keeper(attempt, Clock(), rearmed).run()
    assert store.tags == [] and store.detached == []


def test_only_a_failed_run_that_is_not_retried_on_a_staying_host_is_kept() -> None:
    store = KeptStore()
    host = _attempt(store).host
    assert isinstance(host, PoolHost)
    assert host.keeps(contract.FAILED, DELETE)
    assert not host.keeps(contract.FAILED, RELEASE)  # retried: the next attempt comes
    assert not host.keeps(contract.SUCCEEDED, DELETE) and not host.keeps(contract.CANCELLED, DELETE)
    host.stopping = True
    assert not host.keeps(contract.FAILED, DELETE)
    host.stopping, host.sub = False, {**host.sub, "keep_on_failure": 0}
    assert not host.keeps(contract.FAILED, DELETE)


class ExitedProcess(Process):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def exit_code(self) -> int | None:
        return 3

    def cleanup(self) -> None:
        self.calls.append("cleanup")

    def keep(self) -> None:
        self.calls.append("keep")


class Settled(Settlement):
    def __init__(self, store: Any) -> None:
        self.store = store
        self.seen: Any = None

    def settle(self, state: str, action: str) -> None:
        # The final status is written before the run is settled: it already names the window.
        self.seen = (state, action, self.store.json(Layout("p").status(RUN)).get(contract.KEPT_UNTIL))


RUN = "kj-20261130-120000-abcdef"


def _concluded(store: Any, keep_on_failure: int, code: int = 3) -> tuple[Attempt, ExitedProcess, Settled]:
    from submitter.runtime.rules import EXITED, Ending

    host = PoolHost(store, Layout("p"), {"submission_id": RUN, "keep_on_failure": keep_on_failure,
                                         "max_runtime": 3600}, {"instance_id": "i-1"}, price=0.36)
    host.group, host.queue_url = "submitter-g", "https://queue"
    process, settled = ExitedProcess(), Settled(store)
    attempt = Attempt(host, {"run_id": RUN}, Status(RUN, RUN, "kj", contract.RUNNING, attempt=1), process, settled)
    attempt.started = time.monotonic() - 30
    attempt.conclude(Ending(EXITED, code))
    return attempt, process, settled


def test_the_final_status_of_a_kept_run_names_its_window_and_the_container_stays() -> None:
    store = KeptStore()
    attempt, process, settled = _concluded(store, 120)
    assert attempt.kept and process.calls == ["keep"]
    assert settled.seen[:2] == (contract.FAILED, DELETE) and settled.seen[2], "tagged and in the status first"
    assert store.tags and store.detached, "the instance left its group before the run was reported failed"
    assert isinstance(attempt.host, PoolHost) and attempt.host.keeper is not None


def test_without_keep_on_failure_the_container_is_removed_as_before() -> None:
    store = KeptStore()
    attempt, process, settled = _concluded(store, 0)
    assert not attempt.kept and process.calls == ["cleanup"]
    assert settled.seen == (contract.FAILED, DELETE, None) and store.tags == []


def test_cost_counts_a_kept_window_until_it_ended() -> None:
    end = NOW
    doc: dict[str, Any] = {"state": contract.FAILED, contract.KEPT_UNTIL: contract.iso(NOW + timedelta(minutes=20))}
    assert keep.billed_until(doc, end, NOW + timedelta(minutes=5)) == NOW + timedelta(minutes=5)  # open: until now
    assert keep.billed_until(doc, end, NOW + timedelta(hours=1)) == NOW + timedelta(minutes=20)
    doc[contract.KEPT_ENDED] = contract.iso(NOW + timedelta(minutes=3))
    assert keep.billed_until(doc, end, NOW + timedelta(hours=1)) == NOW + timedelta(minutes=3)
    assert keep.billed_until({"state": contract.FAILED}, end, NOW + timedelta(hours=1)) == end
