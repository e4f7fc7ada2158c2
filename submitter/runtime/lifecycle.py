"""One run attempt, the same for the pool agent and the Batch wrapper: begin (counters), restore (inputs,
checkpoints, log continuation), start, watch (heartbeat, log chunks, checkpoint sync, cancel markers, limits,
spot notice), stop, conclude (uploads, final status, settle). What differs sits behind two seams
(runtime/seams.py): the `Process` (a `docker run` container or a child process) and the `Settlement` (an SQS
lease or a Batch exit code)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from submitter import contract
from submitter.contract import Status
from submitter.runtime import files, rules
from submitter.runtime.checkpoints import Checkpoints, newest_mtime, stale_warning
from submitter.runtime.commands import CommandError
from submitter.runtime.imds import IMDS_ERRORS
from submitter.runtime.index import Indexer
from submitter.runtime.ledger import Ledger
from submitter.runtime.logs import LogShipper, RunLog
from submitter.runtime.metrics import MetricsShipper
from submitter.runtime.rules import Ending
from submitter.runtime.seams import Host, Process, Settlement

log = logging.getLogger("submitter.runtime")

CHECKPOINT_EVERY = 60.0
SYNC_TIMEOUT = 600  # the final checkpoint sync waits this long for a periodic one still running
NOTICE_EVERY = 1.0  # seconds between spot notice reads within a tick (IMDS is local; a tick does the rest)


def concurrently(steps: list[Callable[[], None]]) -> None:
    """Run `steps` at the same time and wait for all; the first one's exception, if any, is raised after."""
    if len(steps) <= 1:
        for step in steps:
            step()
        return
    with ThreadPoolExecutor(len(steps)) as pool:
        for future in [pool.submit(step) for step in steps]:
            future.result()


class Attempt:
    """One attempt of one run on `host`; `run` is the queue message's body ({run_id, index, env})."""

    def __init__(self, host: Host, run: dict[str, Any], status: Status, process: Process,
                 settlement: Settlement) -> None:
        self.host, self.run, self.status, self.process, self.settlement = host, run, status, process, settlement
        self.run_id = str(run["run_id"])
        self.store, self.layout, self.sub = host.store, host.layout, host.sub
        self.started = 0.0  # monotonic time the command started (0: not started)
        self.base_cost = 0.0  # what earlier attempts of the run cost
        self.action_time: datetime | None = None  # a spot notice's reclaim time
        self.shipper: LogShipper | None = None
        self.metrics: MetricsShipper | None = None
        self.begun = False  # the attempt was counted and opened in the status's timeline
        self.run_log: RunLog | None = None
        self.sync: threading.Thread | None = None
        self.sync_lock = threading.Lock()
        self.checkpoints = Checkpoints(self.store, self.layout, self.run_id)
        self.checkpoint_warned = False  # the stale warning is said in the log once per attempt
        self.started_wall = 0.0  # time.time() the command started: no checkpoint yet counts from here
        self.final: tuple[str, str] | None = None  # (state, action) once concluded
        self.kept = False  # the process is kept for inspection instead of cleaned up (Host.keep)
        self.ledger: Ledger | None = None  # this attempt's entry in the spend ledger, once its command started
        self.indexer = Indexer(self.layout, lambda key: self.store.put_bytes(key, b""), self.store.delete)
        self.indexer.follow(status)  # the document this attempt starts from: its entry is superseded first

    # ------------------------------------------------------------------------------------ begin

    def execute(self) -> Ending:
        self.process.prepare()
        self.run_log = RunLog(self.store, self.layout, self.run_id, self.process.logs_dir / "agent.log",
                              self.host.label)
        if self.host.cancelled(self.run_id):
            return self.conclude(Ending(rules.CANCEL, reason="cancelled before it started"))
        if self.host.boot_error:
            return self.conclude(Ending(rules.SETUP, reason=self.host.boot_error))
        self.host.on_begin()
        previous = self.status.instance_id
        identity = {**self.host.identity, "price": self.host.price}
        self.status, lost = rules.begin_attempt(self.status, identity, contract.iso())
        self.begun = True
        self.base_cost = float(self.status.cost or 0.0)
        if lost:
            log.warning("the previous attempt (on %s) ended without a report: counted as an interruption", previous)
            given_up = rules.interruption_reason(self.status.interruptions,
                                                 int(self.host.retries().get("on_interruption", 0)))
            if given_up:
                return self.conclude(Ending(rules.SETUP, reason=given_up))
        self.write_status()
        log.info("run %s: attempt %s (%s)", self.run_id, self.status.attempt,
                 ", ".join(f"{k} {v}" for k, v in sorted(self.host.identity.items())))
        try:
            self.restore()
            self.start()
        except (CommandError, ValueError, OSError) as exc:
            log.error("run %s could not start: %s", self.run_id, exc)
            return self.conclude(Ending(rules.SETUP, reason=str(exc)))
        return self.conclude(self.watch())

    def write_status(self) -> None:
        self.store.put_json(self.layout.status(self.run_id), self.status.to_json())
        try:  # after the document, on a state change only; a missed entry leaves `status` a step behind
            self.indexer.write(self.status)
        except CommandError as exc:
            log.warning("run %s: the run index entry was not written: %s", self.run_id, exc)

    def restore(self) -> None:
        mount = self.sub.get("volume_mount") or "/data"
        for item in self.sub.get("inputs") or []:
            uri, target = str(item["uri"]), str(item["target"])
            dest = rules.data_path(target, mount, self.process.data_dir)
            link = files.link_on_way(self.process.data_dir, dest.relative_to(self.process.data_dir).as_posix())
            if link is not None:  # left by an earlier run on this host: writing through it would leave the volume
                raise ValueError(f"input {uri}: the symbolic link {link} is on the way to {target}; it is not "
                                 f"followed")
            if (uri, target) in self.host.restored:
                log.info("input %s is already at %s", uri, target)
                continue
            count = self.store.download(uri, dest, str(item.get("kind", "dir")))
            self.host.restored.add((uri, target))
            log.info("input %s restored to %s (%d file(s))", uri, target, count)
        self.metrics = MetricsShipper(self.store, self.layout, self.run_id, self.process.metrics_dir)
        steps = [self.restore_log, self.metrics.restore]
        if self.sub.get("checkpoints"):
            steps.append(lambda: self.checkpoints.restore(self.process.checkpoints_dir))
        concurrently(steps)  # independent objects: a resumed run starts one round trip after the slowest

    def restore_log(self) -> None:
        container_log = self.process.logs_dir / "container.log"
        if not self.store.fetch(self.layout.container_log(self.run_id), container_log):
            container_log.write_bytes(b"")
        number = contract.next_chunk_number(self.store.keys(self.layout.chunks(self.run_id)))
        self.shipper = LogShipper(self.store, self.layout, self.run_id, container_log, number,
                                  echo=self.host.echo_log)

    def start(self) -> None:
        names = [str(n) for n in (self.sub.get("secrets") or {}).get("names") or []]
        secrets = self.store.secrets(names, str(self.sub["secrets"]["ssm_prefix"])) if names else {}
        env = rules.container_env(self.sub, self.run, self.status.attempt, self.process.metrics_file)
        self.process.start(env, secrets)
        self.started, self.started_wall = time.monotonic(), time.time()
        now = contract.iso()
        self.status = self.status.evolve(contract.RUNNING, started_at=now, heartbeat_at=now,
                                         checkpoint_warning=None, **self.checkpoint_fields(stale=False))
        self.write_status()
        self.ledger = Ledger(self.store, self.layout, self.run_id, self.status.attempt,
                             {"price": self.host.price, **self.host.identity})
        self.ledger.record(0.0)
        log.info("run %s: %s started (env %s)", self.run_id, self.process.noun, ", ".join(sorted(env)))

    # ------------------------------------------------------------------------------------ while it runs

    def cost(self) -> float:
        elapsed = time.monotonic() - self.started if self.started else 0.0
        return round(self.base_cost + rules.cost_of(self.host.price, elapsed), 6)

    def watch(self) -> Ending:
        tick = 0
        last_heartbeat = last_sync = time.monotonic()
        while True:
            code, ending = self.wait_tick()
            if code is not None:
                log.info("run %s: %s exited with %d", self.run_id, self.process.noun, code)
                return Ending(rules.EXITED, code)
            tick += 1
            ending = ending or self.check(tick)
            if ending is not None:
                log.warning("run %s: stopping (%s)", self.run_id, ending.reason)
                self.stop()
                return ending
            now = time.monotonic()
            try:
                assert self.shipper is not None
                self.shipper.ship()
                if now - last_heartbeat >= contract.HEARTBEAT_EVERY_S:
                    last_heartbeat = now
                    self.status = self.status.evolve(contract.RUNNING, heartbeat_at=contract.iso(), cost=self.cost(),
                                                     **self.checkpoint_fields())
                    self.write_status()
                    if self.metrics is not None:  # after the heartbeat: a failed upload must not hold it back
                        self.metrics.ship()
                if self.ledger is not None and self.ledger.due():
                    self.ledger.record(self.cost() - self.base_cost)
            except Exception as exc:  # an S3 hiccup: the next tick tries again
                log.warning("run %s: %s", self.run_id, exc)
            if self.sub.get("checkpoints") and now - last_sync >= CHECKPOINT_EVERY and not (
                    self.sync and self.sync.is_alive()):
                last_sync = now
                self.sync = threading.Thread(target=self.sync_checkpoints, daemon=True)
                self.sync.start()

    def wait_tick(self) -> tuple[int | None, Ending | None]:
        """One tick: the command's exit code when it ended, or a spot notice, looked for every NOTICE_EVERY
        seconds (a local IMDS read: every second taken off here is a second more of the 2-minute notice)."""
        end = time.monotonic() + self.host.tick
        while True:
            code = self.process.wait(max(min(NOTICE_EVERY, end - time.monotonic()), 0.0))
            if code is not None or time.monotonic() >= end:
                return code, None
            notice = self.spot_notice()
            if notice is not None:
                return None, notice

    def spot_notice(self) -> Ending | None:
        host = self.host
        if host.imds is None:
            return None
        try:
            action = host.imds.spot_action()
        except IMDS_ERRORS as exc:
            log.warning("IMDS: %s", exc)
            if host.imds_optional:
                host.imds = None
            return None
        if not action:
            return None
        self.action_time = contract.parse_iso(action.get("time", ""))
        return Ending(rules.SPOT, reason=f"spot interruption notice ({action.get('action')} at {action.get('time')})")

    def check(self, tick: int) -> Ending | None:
        """Why to stop now (the host stopping, a spot notice, cancel, a limit), or None."""
        host = self.host
        if host.stopping:
            if host.cancelled(self.run_id):
                return Ending(rules.CANCEL, reason="cancelled")
            return Ending(rules.HOST, reason=host.stop_reason)
        notice = self.spot_notice()
        if notice is not None:
            return notice
        if host.imds is not None:
            try:
                if not host.rebalance_seen and host.imds.get("meta-data/events/recommendations/rebalance"):
                    host.rebalance_seen = True
                    log.warning("EC2 recommends a rebalance: this host's capacity is at elevated risk")
            except IMDS_ERRORS as exc:
                log.warning("IMDS: %s", exc)
                if host.imds_optional:
                    host.imds = None
        # The two cancel objects are looked for on alternate ticks: half the requests, <= 2 ticks late.
        if host.cancelled(self.run_id, which=tick):
            return Ending(rules.CANCEL, reason="cancelled")
        reason = rules.limit_reason(time.monotonic() - self.started, self.cost(), self.sub.get("max_runtime"),
                                    self.sub.get("max_cost"))
        return Ending(rules.LIMIT, reason=reason) if reason else None

    def sync_checkpoints(self) -> None:
        with self.sync_lock:
            try:
                self.checkpoints.sync(self.process.checkpoints_dir, self.status.attempt)
            except Exception as exc:  # the next sync, or the final one, picks up what this one missed
                current = self.checkpoints.current
                log.warning("checkpoint sync cut off, no manifest written (%s); %s stays in force", exc,
                            f"manifest {current.number}" if current else "no checkpoint")

    def checkpoint_fields(self, stale: bool = True) -> dict[str, Any]:
        """The status fields on checkpoints: the last manifest's time, a restore's note, the stale warning."""
        if not self.sub.get("checkpoints"):
            return {}
        current = self.checkpoints.current
        fields: dict[str, Any] = {"checkpoint_at": current.written_at if current else None,
                                  "checkpoint_note": self.checkpoints.note}
        if stale:
            last = max(newest_mtime(self.process.checkpoints_dir) or 0.0, self.started_wall)
            after = float(self.sub.get("checkpoint_warn_after") or contract.CHECKPOINT_WARN_AFTER_S)
            fields["checkpoint_warning"] = warning = stale_warning(last, time.time(), after)
            if warning and not self.checkpoint_warned:
                self.checkpoint_warned = True
                log.warning("run %s: %s", self.run_id, warning)
        return fields

    def stop(self) -> None:
        grace = rules.stop_timeout(int(self.sub.get("grace_seconds") or contract.DEFAULT_GRACE_S), self.action_time,
                                   datetime.now(timezone.utc))
        self.process.stop(grace)

    # ------------------------------------------------------------------------------------ the end

    def conclude(self, ending: Ending) -> Ending:
        """Everything a run leaves whatever happened: logs, outputs, checkpoints, status; then it is settled."""
        if self.started:
            code = self.process.exit_code()
            if code is not None:
                ending = Ending(ending.kind, code, ending.reason)
            self.upload_results()
        state, fields, action = rules.decide_end(ending, self.status, self.host.retries())
        state, fields = self.settlement.adjust(state, fields, action)
        if self.started:
            kept = self.host.keep(self, state, action)
            self.kept = bool(kept)
            fields.update(kept)
        fields.update({k: v for k, v in self.host.identity.items() if getattr(self.status, k, None) is None
                       and k not in self.status.extra})
        fields.update(self.checkpoint_fields(stale=False))
        now = contract.iso()
        if self.begun:
            fields["timeline"] = rules.timeline_end(self.status, ending, now)
        self.status = self.status.evolve(state, ended_at=now, heartbeat_at=now, cost=self.cost(), **fields)
        if ending.exit_code is not None:
            self.status.exit_code = ending.exit_code
        log.info("run %s: %s%s; %s", self.run_id, state, f" ({fields['reason']})" if fields.get("reason") else "",
                 action)
        # The ledger and the agent's log before the final status: whoever waits for it may remove the role at once
        # (`submit --wait`).
        ledger, cost = self.ledger, float(self.status.cost or 0.0) - self.base_cost
        last: list[Callable[[], None]] = [] if ledger is None else [lambda: ledger.record(cost, final=True)]
        concurrently(last + ([] if self.run_log is None else [self.run_log.upload]))
        self.write_status()
        self.final = (state, action)
        self.settlement.settle(state, action)
        self.host.handled.append({"run_id": self.run_id, "state": state})
        self.close()
        return ending

    def upload_results(self) -> None:
        steps = [("container log", self.finish_log)]
        if self.metrics is not None:
            steps.append(("metrics stream", self.metrics.ship))
        if self.sub.get("outputs"):
            steps.append(("outputs", lambda: self.store.upload_tree(
                self.process.outputs_dir, self.layout.outputs(self.run_id), {})))
        if self.sub.get("checkpoints"):
            steps.append(("checkpoints", self.sync_checkpoints))
        if self.sync is not None:
            self.sync.join(timeout=SYNC_TIMEOUT)  # the final sync must not race the last periodic one

        def upload(what: str, step: Callable[[], None]) -> Callable[[], None]:
            def guarded() -> None:
                try:
                    step()
                except Exception as exc:  # one failed upload must not cost the others
                    log.error("run %s: uploading the %s failed: %s", self.run_id, what, exc)
            return guarded

        # Side by side (each is AWS CLI processes on its own keys): after a spot notice, the seconds that count.
        concurrently([upload(what, step) for what, step in steps])

    def finish_log(self) -> None:
        self.process.finish_output()
        if self.shipper is not None:
            self.shipper.finish()

    def close(self) -> None:
        if self.run_log is not None:
            self.run_log.close()
            self.run_log = None
        self.process.keep() if self.kept else self.process.cleanup()

    def abort(self, reason: str) -> None:
        """After an unexpected error: stop the command, keep what it made, settle the run."""
        try:
            if self.started:
                self.stop()
            if self.final is None:
                self.conclude(Ending(rules.ERROR, reason=reason))
        except Exception:
            log.exception("run %s: could not settle it after the error", self.run_id)
            try:
                self.settlement.release()
            except Exception:
                log.exception("could not release the run")
