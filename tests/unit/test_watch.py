"""`status --watch`'s loop: it reads until every run is in a state it never leaves, waits between reads, and a
Ctrl-C during a wait ends the watch with the last reading (not an error)."""

from __future__ import annotations

from typing import Any

import pytest

from submitter import watch


def _reader(readings: list[list[str]]) -> tuple[Any, list[int]]:
    calls: list[int] = []

    def read() -> list[dict[str, Any]]:
        calls.append(1)
        return [{"run_id": f"r{i}", "state": s} for i, s in enumerate(readings[len(calls) - 1])]

    return read, calls


def test_it_reads_until_every_run_has_ended_waiting_between_reads() -> None:
    read, calls = _reader([["queued", "running"], ["interrupted", "succeeded"], ["running", "succeeded"],
                           ["failed", "succeeded"], ["must not be read"]])
    shown: list[list[str]] = []
    waits: list[float] = []
    last = watch.until_ended(read, lambda states: shown.append([s["state"] for s in states]), 2.5, waits.append)
    assert [s["state"] for s in last] == ["failed", "succeeded"]
    assert len(calls) == 4 and len(shown) == 4  # an interrupted run is queued again: still watched
    assert waits == [2.5, 2.5, 2.5]  # no wait after the last reading


@pytest.mark.parametrize("states", [[], ["succeeded"], ["succeeded", "failed", "cancelled"]])
def test_runs_that_have_all_ended_are_read_and_shown_once(states: list[str]) -> None:
    read, calls = _reader([states])
    waits: list[float] = []
    watch.until_ended(read, lambda _: None, 1.0, waits.append)
    assert len(calls) == 1 and waits == []


@pytest.mark.parametrize("state", ["queued", "starting", "running", "interrupted", "unknown"])
def test_a_run_not_ended_keeps_the_watch_going(state: str) -> None:
    assert not watch.ended([{"state": "succeeded"}, {"state": state}])
    assert not watch.ended([{"run_id": "no state yet"}])


def test_ctrl_c_during_a_wait_returns_the_last_reading() -> None:
    read, calls = _reader([["running"], ["running"]])

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    last = watch.until_ended(read, lambda _: None, 1.0, interrupted)
    assert [s["state"] for s in last] == ["running"] and len(calls) == 1
