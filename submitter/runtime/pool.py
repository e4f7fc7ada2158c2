"""The pool worker (`runtime.pyz agent ...`, started once by the boot script as root): boot the host, then
take runs from the submission's SQS queue, one attempt each (lifecycle.Attempt), until the queue is empty
or the host goes away. Exit codes: boot.sh's (0 drained, 1 boot failed, 3 agent error, EXIT_RETRY stay
counted in the group)."""

from __future__ import annotations

import argparse
import json
import logging
import threading
from typing import Any

from submitter import contract
from submitter.contract import Layout
from submitter.runtime import cache, credentials, index, ledger
from submitter.runtime import host as host_mod
from submitter.runtime.commands import CommandError
from submitter.runtime.docker import DockerProcess, gpu_flag
from submitter.runtime.imds import IMDS_ERRORS, Imds
from submitter.runtime.keep import Keeper
from submitter.runtime.lifecycle import Attempt
from submitter.runtime.rules import DELETE, HOST, SPOT, Ending
from submitter.runtime.seams import Host, Settlement, read_status
from submitter.runtime.store import CliStore, Store

log = logging.getLogger("submitter.runtime")

RECEIVE_WAIT = 20
EMPTY_RECEIVES_TO_EXIT = 2
EXIT_BOOT_FAILED, EXIT_AGENT_ERROR = 1, 3


class Lease(Settlement):
    """A received message, kept invisible to other workers until it is deleted or released."""

    def __init__(self, store: Store, queue_url: str, receipt: str,
                 every: float = contract.VISIBILITY_EXTEND_EVERY_S) -> None:
        self.store, self.queue_url, self.receipt, self.every = store, queue_url, receipt, every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="lease", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._done.wait(self.every):
            try:
                self.store.change_visibility(self.queue_url, self.receipt, contract.VISIBILITY_TIMEOUT_S)
            except CommandError as exc:
                log.warning("could not extend the message's visibility: %s", exc)

    def _stop_keeping(self) -> None:
        self._done.set()
        # An extension still in flight must not land after the release and hide the run for 5 minutes.
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=120)

    def delete(self) -> None:
        self._stop_keeping()
        self.store.delete_message(self.queue_url, self.receipt)

    def release(self) -> None:
        """Visible again at once, so the next worker (or this one) takes the run up."""
        self._stop_keeping()
        self.store.change_visibility(self.queue_url, self.receipt, 0)

    def settle(self, state: str, action: str) -> None:
        self.delete() if action == DELETE else self.release()


class PoolHost(Host):
    group = ""  # the worker's Auto Scaling group and queue: a kept instance leaves the one, reads the other
    queue_url = ""
    keeper: Keeper | None = None

    def on_begin(self) -> None:
        host_mod.rearm_deadman(contract.deadman_minutes(self.sub.get("max_runtime"),
                                                        int(self.sub.get("deadman_minutes") or 60)))

    def keeps(self, state: str, action: str) -> bool:
        # A failed run ends for good (no retry follows) on a host that is not going away: runtime/keep.py.
        return (state == contract.FAILED and action == DELETE and not self.stopping and not self.boot_error
                and float(self.sub.get("keep_on_failure") or 0) > 0)

    def keep(self, attempt: Attempt, state: str, action: str) -> dict[str, Any]:
        if not self.keeps(state, action):
            return {}
        self.keeper = Keeper(attempt, self.group, str(self.identity.get("instance_id", "")), self.queue_url)
        return self.keeper.begin(attempt.cost())


class Agent:
    """One worker: boot the host once, then take runs from the queue until it is empty or EC2 reclaims it."""

    def __init__(self, args: argparse.Namespace, store: Store | None = None, imds: Imds | None = None) -> None:
        self.args = args
        store = store or CliStore(args.region, args.bucket, args.bucket_owner)
        self.host = PoolHost(store, Layout(args.prefix), {}, {"instance_id": args.instance_id},
                             imds=imds or Imds())
        self.work = host_mod.WORK_BASE / args.instance_id
        self.gpus: str | None = None
        self.queue_url = ""
        self.current: Attempt | None = None
        self.kept = False  # this worker kept a failed run's instance: it takes no more runs
        self.ended = False  # the run index showed every run of the submission ended: drained without waiting
        self.runs: list[str] = []  # the submission's runs, from its queued marker (all_ended)
        # When this worker started (the boot script starts it right after the host's install): the instance
        # report's start, so the submit side can count instance-hours per pool (placement/history.py).
        self.booted_at = contract.iso()

    # -------------------------------------------------------------------------------- top level

    def main(self) -> int:
        try:
            return self.serve()
        except Exception as exc:  # never die silently: the run and the instance report say why
            log.exception("agent error")
            reason = f"agent error: {type(exc).__name__}: {exc}"
            if self.current is not None:
                self.current.abort(reason)
            self.report(contract.AGENT_ERROR, reason)
            return EXIT_AGENT_ERROR

    def serve(self) -> int:
        host = self.host
        key = host.layout.submission_doc(self.args.submission)
        host.sub = host.store.read_json(key) or {}
        if not host.sub:
            raise RuntimeError(f"no {host.store.uri(key)}")
        self.boot()
        self.queue_url = host.queue_url = host.store.queue_url(str(host.sub["queue_name"]))
        host.group = str(self.args.group)
        empty = 0
        while empty < EMPTY_RECEIVES_TO_EXIT and not host.stopping:
            over = ledger.reached(host.store, host.layout, host.sub)  # before every run this worker takes
            if over:
                return self.wind_down(over)
            messages = host.store.receive(self.queue_url, RECEIVE_WAIT, contract.VISIBILITY_TIMEOUT_S)
            if not messages:
                empty += 1
                if self.all_ended():
                    break
                continue
            empty = 0
            ending = self.handle(messages[0])
            if self.kept:
                self.report(contract.KEPT, "kept a failed run's instance for its window, then ended")
                return 0  # boot.sh powers off; the instance left its group already
            if ending is not None and ending.kind in (SPOT, HOST):
                self.report(contract.INTERRUPTED, ending.reason)
                # The boot script powers off without leaving the group: the group replaces this worker,
                # and the replacement resumes the run just put back on the queue.
                return contract.EXIT_RETRY
            if self.all_ended():  # this worker ran the last run: nothing can come back to the queue
                break
        if host.boot_error:
            self.report(contract.BOOT_FAILED, host.boot_error)
            return EXIT_BOOT_FAILED
        if host.stopping:
            # Not a drained queue: the host is going away under us (a reclaim, a shutdown). Stay counted in
            # the group so whatever is left on the queue gets a worker.
            self.report(contract.STOPPED, "the host is shutting down")
            return contract.EXIT_RETRY
        self.report(contract.DRAINED, "every run has ended" if self.ended else "the queue is empty")
        return 0

    def all_ended(self) -> bool:
        """Every run of the submission has ended, as its run index says (one listing): no run can come back to
        the queue, so the worker leaves now instead of after EMPTY_RECEIVES_TO_EXIT long polls (40 s billed).
        Anything the index cannot settle (a run without an entry, a tie, a failed listing) means: drain as usual."""
        host, sub = self.host, str(self.args.submission)
        try:
            # The marker is written once, when the runs are queued: read it until it has runs, then keep them.
            runs = self.runs = self.runs or contract.queued_runs(host.store.read_json(host.layout.queued(sub)))
            latest = index.latest(host.store.keys(host.layout.index(sub)), host.layout, sub)
        except (CommandError, ValueError) as exc:
            log.warning("the run index could not be read (%s): draining the queue", exc)
            return False
        self.ended = bool(runs) and all(
            run in latest and latest[run][0]["state"] in contract.TERMINAL and not latest[run][1] for run in runs)
        return self.ended

    def boot(self) -> None:
        host = self.host
        try:
            host.identity.update(host.imds.placement() if host.imds else {})
        except IMDS_ERRORS as exc:
            log.warning("IMDS: %s", exc)
            host.identity.update({"instance_type": "unknown", "availability_zone": "unknown"})
        host.price = spot_price(host)
        host.identity["host"] = self.host_facts()
        log.info("instance %s (%s in %s), spot price $%.4f/h", self.args.instance_id,
                 host.identity["instance_type"], host.identity["availability_zone"], host.price)
        try:
            self.work = host_mod.prepare_volume(self.args.instance_id)
            (self.work / "data").mkdir(exist_ok=True)
            (self.work / "data").chmod(0o777)  # a job whose image runs as a non-root user may write there
            log.info("%s", cache.warm(self.work, str(host.sub["image"])))  # a volume restored from `submitter cache`
            host_mod.pull_image(host.store, host.sub.get("registry"), host.sub["image"])
            credentials.block_imds()  # with hop limit 1: no container reaches the instance role
            self.gpus = gpu_flag(host.sub.get("gpus", "auto"), host_mod.docker_runtimes())
        except host_mod.BootError as exc:
            host.boot_error = str(exc)
            log.error("boot failed: %s; every run this worker receives is marked failed", exc)

    def host_facts(self) -> dict[str, str]:
        """The AMI and versions this host runs (docs/runtime-contract.md, "Reproducing a run")."""
        facts = host_mod.versions()
        try:
            ami = self.host.imds.get("meta-data/ami-id") if self.host.imds else None
        except IMDS_ERRORS as exc:
            log.warning("IMDS: %s", exc)
            ami = None
        return {"ami_id": ami, **facts} if ami else facts
    def wind_down(self, reason: str) -> int:
        """The month's spend reached the budget: start no run. The runs still queued end `cancelled` with
        `reason` (visible in `status`, and `submit --wait` ends), and the worker leaves the group as when the
        queue is drained (exit 0: no replacement is started). A run another worker holds is finished there."""
        host = self.host
        log.warning("%s: this worker takes no more runs", reason)
        # Said at once: once the last run has ended, `submit --wait` may remove the group, and this host with it.
        self.report(contract.DRAINED, reason)
        empty = 0
        while empty < EMPTY_RECEIVES_TO_EXIT:
            messages = host.store.receive(self.queue_url, RECEIVE_WAIT, contract.VISIBILITY_TIMEOUT_S)
            if not messages:
                empty += 1
                continue
            empty = 0
            try:
                run_id = str(json.loads(messages[0]["Body"])["run_id"])
                if contract.is_run_of(run_id, str(self.args.submission)):
                    state = ledger.leave(host.store, host.layout, host.sub, run_id, reason)
                    host.handled.append({"run_id": run_id, "state": state})
            except (ValueError, KeyError, TypeError) as exc:
                log.error("dropping a message that names no run (%s)", exc)
            host.store.delete_message(self.queue_url, str(messages[0]["ReceiptHandle"]))
        self.report(contract.DRAINED, reason)
        return 0

    def report(self, state: str, reason: str) -> None:
        doc = {**self.host.identity, "state": state, "reason": reason, "time": contract.iso(),
               "booted_at": self.booted_at, "runs": self.host.handled}
        try:
            self.host.store.put_json(self.host.layout.instance_report(self.args.submission, self.args.instance_id),
                                     doc)
        except CommandError as exc:
            log.error("could not write the instance report: %s", exc)

    # -------------------------------------------------------------------------------- one message

    def handle(self, message: dict[str, Any]) -> Ending | None:
        lease = Lease(self.host.store, self.queue_url, str(message["ReceiptHandle"]))
        try:
            body = json.loads(message["Body"])
            run_id = str(body["run_id"])
            if not contract.is_run_of(run_id, str(self.args.submission)):  # it becomes a path on this host
                raise ValueError(f"{run_id!r} is not a run of {self.args.submission}")
        except (ValueError, KeyError, TypeError) as exc:  # would fail on every worker: drop it, say so
            log.error("dropping a message that names no run (%s): %.200s", exc, message.get("Body"))
            lease.delete()
            return None
        status = read_status(self.host, run_id)
        log.info("run %s: received (receive count %s, state %s)", run_id,
                 message.get("Attributes", {}).get("ApproximateReceiveCount", "?"), status.state)
        if status.terminal:
            log.info("run %s is already %s: dropping a duplicate message", run_id, status.state)
            lease.delete()
            return None
        process = DockerProcess(self.host.sub, run_id, self.args.instance_id, self.work, self.gpus, self.host.store)
        attempt = self.current = Attempt(self.host, body, status, process, lease)  # main() settles it if it raises
        ending = attempt.execute()
        self.current = None
        if attempt.kept and self.host.keeper is not None:
            self.host.keeper.finish()  # the window: this worker takes no more runs
            self.kept = True
        return ending


def spot_price(host: Host) -> float:
    """The current spot price of this host's type and zone; 0 (cost unknown) when it cannot be read."""
    where = (str(host.identity.get("instance_type")), str(host.identity.get("availability_zone")))
    try:
        price = host.store.spot_price(*where)
    except Exception as exc:  # a missing permission must not stop the run
        log.warning("no spot price for %s in %s (%s): cost is reported as 0", *where, exc)
        return 0.0
    if price is None:
        log.warning("no spot price for %s in %s: cost is reported as 0", *where)
    return price or 0.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="runtime.pyz agent", description="the pool worker")
    for name in ("submission", "bucket", "prefix", "group", "instance-id", "region", "bucket-owner"):
        parser.add_argument(f"--{name}", required=name not in ("prefix", "bucket-owner"), default="")
    return parser.parse_args(argv)
