"""The spend ledger as the runtime keeps it (SUBMITTER_BUDGET; docs/decisions.md, "The monthly budget").

Every attempt books its own cost under the month it started in, as one object whose name carries the cost
(contract.Layout.ledger_entry): renewed every contract.LEDGER_EVERY_S while it runs (the new entry first, then
the old one removed) and once more when it ends. Summing a month is one listing, no object read, so a worker
can afford it before every run it takes. Writing the ledger never stops a run: a failed write is logged and the
next renewal tries again."""

from __future__ import annotations

import logging
import time
from typing import Any

from submitter import contract
from submitter.contract import Layout
from submitter.runtime import index
from submitter.runtime.store import Store

log = logging.getLogger("submitter.runtime")


class Ledger:
    """The ledger entry of one attempt of one run."""

    def __init__(self, store: Store, layout: Layout, run_id: str, attempt: int, details: dict[str, Any]) -> None:
        self.store, self.layout, self.run_id, self.attempt = store, layout, run_id, attempt
        self.details = details  # instance, type, zone, price: kept in the entry for whoever reads it
        self.month = contract.month_of()
        self.started_at = contract.iso()
        self.key: str | None = None
        self.renewed = 0.0  # monotonic time of the last write

    def due(self) -> bool:
        return time.monotonic() - self.renewed >= contract.LEDGER_EVERY_S

    def record(self, cost: float, final: bool = False) -> None:
        """Book `cost` (USD, this attempt alone) as the attempt's entry."""
        self.renewed = time.monotonic()
        key = self.layout.ledger_entry(self.month, self.run_id, self.attempt, round(cost, 6))
        if key == self.key and not final:
            return
        doc = {"run_id": self.run_id, "attempt": self.attempt, "cost": round(cost, 6), "month": self.month,
               "started_at": self.started_at, "updated_at": contract.iso(), "final": final, **self.details}
        try:
            self.store.put_json(key, doc)
            old, self.key = self.key, key
            if old is not None and old != key:
                self.store.delete(old)  # left behind on a failure: the larger entry of an attempt stands anyway
        except Exception as exc:  # the budget is not worth a run: the next renewal tries again
            log.warning("run %s: could not write its ledger entry: %s", self.run_id, exc)


def budget_of(sub: dict[str, Any]) -> float | None:
    """The monthly budget (USD) the submission document carries; None when SUBMITTER_BUDGET was not set."""
    value = (sub.get("budget") or {}).get("usd") if isinstance(sub.get("budget"), dict) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def month_spend(store: Store, layout: Layout, month: str | None = None) -> float:
    """What the ledger holds for `month` (default: this one), USD."""
    prefix = layout.ledger(month or contract.month_of())
    return contract.ledger_total(prefix, store.keys(prefix))


def reached(store: Store, layout: Layout, sub: dict[str, Any]) -> str | None:
    """Why no new run may start (the month's spend is at or over the submission's budget), else None. A ledger
    that cannot be read does not stop the work: it is logged, and the next look tries again."""
    budget = budget_of(sub)
    if budget is None:
        return None
    month = contract.month_of()
    try:
        spent = month_spend(store, layout, month)
    except Exception as exc:
        log.warning("could not read the ledger of %s: %s; taking the run", month, exc)
        return None
    log.info("ledger %s: $%.6f recorded against the budget $%.2f", month, spent, budget)
    return contract.budget_reason(spent, budget, month) if spent >= budget else None


def leave(store: Store, layout: Layout, sub: dict[str, Any], run_id: str, reason: str) -> str:
    """Mark a run the budget keeps from starting: it ends `cancelled` with `reason`, unless it already ended.
    Returns the state it is left in."""
    status = contract.Status.from_json(store.read_json(layout.status(run_id)), run_id)
    if status.terminal:
        return status.state
    now = contract.iso()
    ended = status.evolve(contract.CANCELLED, reason=reason, ended_at=now, heartbeat_at=now,
                          submission_id=status.submission_id or str(sub.get("submission_id", "")),
                          job=status.job or str(sub.get("job", "")))
    index.put_status(store, layout, ended, previous=status)  # the document and its run index entry
    return ended.state
