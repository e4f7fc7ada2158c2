"""A failed run's kept instance, on the worker (limits.keep_on_failure, docs/keep.md): the container stays
stopped and the volume mounted so `submitter ssh RUN` can look (`docker start -ai submitter-RUN`), for a window
bounded by the run's own limits; then the worker ends and the host powers off (terminate behaviour).

The worker first tags itself `submitter:keep-until` (clean-up and gc spare it until then), then leaves its group
without giving up the group's slot when runs still wait, so the group starts a replacement and the kept host never
delays them. The window ends early on the run's (or the submission's) cancel marker."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from submitter import contract
from submitter.runtime import host as host_mod
from submitter.runtime import rules
from submitter.runtime.lifecycle import Attempt

log = logging.getLogger("submitter.runtime")

MIN_KEEP_S = 60.0  # a window shorter than this is not worth an ssh session: none is kept
POLL_S = 5.0  # the cancel markers are looked for this often during the window


def window(requested: float, price: float, cost: float, max_cost: float | None, elapsed: float,
           max_runtime: float | None) -> float:
    """Seconds to keep the instance: the asked-for window, cut to what max_cost leaves at this host's price and
    what max_runtime leaves after the run's own time (the dead-man switch's bound); 0 when under a minute remains."""
    seconds = float(requested or 0.0)
    if max_cost is not None and price > 0:
        seconds = min(seconds, (float(max_cost) - cost) / price * 3600.0)
    if max_runtime:
        seconds = min(seconds, float(max_runtime) - elapsed)
    return seconds if seconds >= MIN_KEEP_S else 0.0


def deadman_minutes(seconds: float) -> int:
    """The host powers itself off this many minutes from now whatever the agent does: the window and a margin."""
    return int(math.ceil((seconds + contract.KEEP_MARGIN_S) / 60.0))


class Keeper:
    """Keeps the instance of `attempt`'s failed run for its window; `run` returns False when it could not (the
    caller then removes the container and the worker goes on taking runs)."""

    def __init__(self, attempt: Attempt, group: str, instance_id: str, queue_url: str,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rearm: Callable[[int], None] = host_mod.rearm_deadman) -> None:
        self.attempt, self.group, self.instance_id, self.queue_url = attempt, group, instance_id, queue_url
        self.host, self.store = attempt.host, attempt.host.store
        self.clock, self.sleep, self.rearm = clock, sleep, rearm
        self.until: datetime | None = None
        self.end_reason = ""

    def run(self) -> bool:
        """The whole window for a run already concluded: begin, write the status, finish."""
        fields = self.begin(float(self.attempt.status.cost or 0))
        if not fields:
            return False
        self.attempt.status = self.attempt.status.evolve(self.attempt.status.state, **fields)
        self.write_status()
        self.finish()
        return True

    def begin(self, cost: float) -> dict[str, str]:
        """Before the run's final status is written (so no clean-up that sees it ended can take the instance
        first): the window from the run's `cost` and time, the tag, leaving the group, the dead-man switch.
        Returns the status fields of the window ({} when nothing is kept)."""
        attempt, host = self.attempt, self.host
        elapsed = self.clock() - attempt.started if attempt.started else 0.0
        seconds = window(float(host.sub.get("keep_on_failure") or 0), host.price, cost, host.sub.get("max_cost"),
                         elapsed, host.sub.get("max_runtime"))
        if seconds <= 0:
            log.info("run %s: no instance kept: max_cost or max_runtime leaves less than %d s", attempt.run_id,
                     MIN_KEEP_S)
            return {}
        until = datetime.now(timezone.utc) + timedelta(seconds=seconds)
        if not self.leave_group(until):
            return {}
        self.rearm(deadman_minutes(seconds))
        self.until = until
        log.info("run %s failed: instance %s, its volume and the stopped container %s are kept until %s for "
                 "`submitter ssh %s`", attempt.run_id, self.instance_id, f"submitter-{attempt.run_id}",
                 contract.iso(until), attempt.run_id)
        return {contract.KEPT_UNTIL: contract.iso(until)}

    def finish(self) -> None:
        """After the final status: wait out the window (or a cancel), then record how it ended."""
        attempt, host = self.attempt, self.host
        assert self.until is not None, "begin() kept nothing"
        started = self.clock()
        # Until the time the tag and the status name (leaving the group took some of the window already).
        self.end_reason = self.wait(started + (self.until - datetime.now(timezone.utc)).total_seconds())
        kept_for = self.clock() - started
        # The window is billed to the run: its cost includes the instance's time while it was kept.
        attempt.status = attempt.status.evolve(
            attempt.status.state, cost=round(float(attempt.status.cost or 0) + rules.cost_of(host.price, kept_for), 6),
            **{contract.KEPT_ENDED: contract.iso(), contract.KEPT_END_REASON: self.end_reason})
        self.write_status()
        try:  # clean-up and gc may take it from now on
            self.store.tag_instance(self.instance_id, contract.TAG_KEEP_UNTIL, contract.iso())
        except Exception as exc:
            log.warning("could not mark the kept window over on the instance: %s", exc)
        log.info("run %s: kept window over (%s) after %d s", attempt.run_id, self.end_reason, kept_for)

    def leave_group(self, until: datetime) -> bool:
        """Tag, then detach: a detached instance without the tag could be taken by a clean-up at once."""
        try:
            self.store.tag_instance(self.instance_id, contract.TAG_KEEP_UNTIL, contract.iso(until))
        except Exception as exc:  # CommandError (the CLI) or the SDK's error (boto3): either way, nothing is kept
            log.error("run %s: no instance kept: tagging %s failed: %s", self.attempt.run_id, self.instance_id, exc)
            return False
        try:
            # Runs waiting: keep the group's slot so a replacement takes them; none: give the slot up (a run that
            # is released later comes from a worker that stays counted, boot.sh).
            waiting = self.store.visible_messages(self.queue_url) if self.queue_url else 0
            self.store.detach(self.group, self.instance_id, decrement=waiting == 0)
            log.info("left group %s (%s)", self.group, f"{waiting} run(s) waiting: the group starts a replacement"
                     if waiting else "no run waiting: its desired capacity went down by one")
            return True
        except Exception as exc:
            log.error("run %s: no instance kept: leaving group %s failed: %s", self.attempt.run_id, self.group, exc)
            try:
                self.store.tag_instance(self.instance_id, contract.TAG_KEEP_UNTIL, contract.iso())
            except Exception:
                log.warning("the keep-until tag stays; it ends at %s anyway", contract.iso(until))
            return False

    def wait(self, end: float) -> str:
        """Until the window ends, a cancel marker appears or the host stops; returns which."""
        host, run_id = self.host, self.attempt.run_id
        tick = 0
        while True:
            remaining = end - self.clock()
            if remaining <= 0:
                return "window over"
            if host.stopping:
                return host.stop_reason
            try:
                if host.cancelled(run_id, which=tick):
                    return "cancelled"
            except Exception as exc:  # S3 answering badly must not end the window, nor outlive it
                log.warning("could not look for the cancel marker: %s", exc)
            tick += 1
            self.sleep(min(POLL_S, remaining))

    def write_status(self) -> None:
        try:
            self.attempt.write_status()
        except Exception as exc:
            log.warning("run %s: could not write its status: %s", self.attempt.run_id, exc)
