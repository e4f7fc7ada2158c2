"""The monthly budget on the submit side (SUBMITTER_BUDGET): what the month's ledger holds, and whether a
submission fits what is left of the budget. The check is pure (`check`); reading the ledger is one listing
(`month_spend`). The workers' side is runtime/ledger.py; docs/decisions.md, "The monthly budget", says what
the ledger can and cannot see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from submitter import contract
from submitter.aws.s3 import S3
from submitter.contract import Layout
from submitter.errors import UsageError
from submitter.plan import Plan

WORST, EXPECTED = "worst", "expected"
MODES = (WORST, EXPECTED)


@dataclass(frozen=True)
class Check:
    """One budget check: `spent` is None when the ledger was not read (a dry run)."""

    budget: float
    month: str
    mode: str
    this: float | None  # what the submission(s) would add: None when it has no bound
    basis: str  # how `this` was found
    spent: float | None = None

    @property
    def remaining(self) -> float | None:
        return None if self.spent is None else round(self.budget - self.spent, 6)

    @property
    def fits(self) -> bool | None:
        """True or False once the ledger was read; None when it was not."""
        if self.spent is None:
            return None
        return self.this is not None and self.spent + self.this <= self.budget

    def to_json(self) -> dict[str, Any]:
        return {"budget": self.budget, "currency": "USD", "month": self.month, "mode": self.mode,
                "spent": self.spent, "this_submission": self.this, "basis": self.basis,
                "remaining": self.remaining, "fits": self.fits,
                "ledger": "read" if self.spent is not None else "not read (a dry run reads nothing from the bucket)"}

    def describe(self) -> str:
        """One line for the plan and for `submit`'s refusal."""
        this = contract.usd(self.this) if self.this is not None else "unbounded"
        if self.spent is None:
            return (f"budget: {contract.usd(self.budget)} for {self.month}; this submission {this} ({self.basis}); "
                    "the month's spend was not read (a dry run reads nothing from the bucket)")
        return (f"budget: {contract.usd(self.budget)} for {self.month}; spent {contract.usd(self.spent)}, remaining "
                f"{contract.usd(self.budget - self.spent)}; this submission {this} ({self.basis})")


def figure(plan: Plan, mode: str) -> tuple[float | None, str]:
    """What `plan` may add to the month's spend, and on what basis: its worst case (every run to its
    max_runtime or max_cost), or with `expected` the upper end of its expected cost when the plan estimates
    one (`estimate.expected.cost_high`), else the worst case."""
    estimate = plan.estimate
    if mode == EXPECTED:
        high = (estimate.get("expected") or {}).get("cost_high") if isinstance(estimate.get("expected"), dict) \
            else None
        if isinstance(high, (int, float)):
            return float(high), "expected cost, upper end"
    at_most = estimate.get("total_at_most")
    if isinstance(at_most, (int, float)):
        basis = "worst case" if mode == WORST else "worst case: the plan has no expected cost"
        return float(at_most), basis
    at_max_price = estimate.get("total_at_most_at_max_price")
    if isinstance(at_max_price, (int, float)):
        return float(at_max_price), "worst case at resources.max_price (the spot price is unknown)"
    return None, "no worst case: the spot price is unknown and the spec sets no resources.max_price"


def check(budget: float, plans: list[Plan], mode: str, spent: float | None,
          now: datetime | None = None) -> Check:
    """The budget check of `plans` submitted together (pure)."""
    found = [figure(p, mode) for p in plans]
    values = [value for value, _ in found]
    this = None if any(v is None for v in values) else round(sum(v for v in values if v is not None), 6)
    basis = "; ".join(sorted({b for _, b in found}))
    return Check(budget, contract.month_of(now), mode, this, basis, spent)


def refuse(result: Check) -> None:
    """Raise the refusal when `result` does not fit (exit 2, with the figures and the next step)."""
    if result.fits is not False:
        return
    if result.this is None:
        raise UsageError(
            "SUBMITTER_BUDGET", f"{result.describe()}: a submission without a bound cannot be checked",
            "set resources.max_price so the worst case has a bound, or unset SUBMITTER_BUDGET")
    other = ("" if result.mode == EXPECTED else
             ", or submit with --budget-mode expected to count its expected cost instead of its worst case")
    raise UsageError(
        "SUBMITTER_BUDGET",
        f"this submission would pass the monthly budget: {result.describe()}",
        f"lower limits.max_runtime or limits.max_cost, or the number of runs{other}; or raise SUBMITTER_BUDGET "
        "(`submitter cost --month` shows the month's spend)")


def month_spend(s3: S3, layout: Layout, month: str) -> float:
    """The month's spend (USD) from one listing of its ledger: each entry carries its cost in its name."""
    prefix = layout.ledger(month)
    return contract.ledger_total(prefix, (str(o["Key"]) for o in s3.objects(prefix)))


def month_report(s3: S3, layout: Layout, month: str, budget: float | None) -> dict[str, Any]:
    """`submitter cost --month`: the month's spend per submission and against the budget."""
    prefix = layout.ledger(month)
    attempts = contract.ledger_attempts(prefix, (str(o["Key"]) for o in s3.objects(prefix)))
    per: dict[str, dict[str, Any]] = {}
    for (run_id, _), cost in sorted(attempts.items()):
        sub = contract.submission_of(run_id) or run_id
        row = per.setdefault(sub, {"submission_id": sub, "runs": set(), "attempts": 0, "cost": 0.0})
        row["runs"].add(run_id)
        row["attempts"] += 1
        row["cost"] += cost
    rows = [{**r, "runs": len(r["runs"]), "cost": round(r["cost"], 6)} for r in per.values()]
    spent = round(sum(attempts.values()), 6)
    return {
        "month": month, "currency": "USD", "spent": spent, "budget": budget,
        "remaining": round(budget - spent, 6) if budget is not None else None,
        "reached": spent >= budget if budget is not None else None,
        "submissions": sorted(rows, key=lambda r: -r["cost"]),
        "basis": "the ledger: each attempt's spot price x its runtime, as its worker recorded it (renewed every "
                 f"{contract.LEDGER_EVERY_S} s while it runs); no EBS, no boot or drain time, no cost outside "
                 "submitter",
    }
