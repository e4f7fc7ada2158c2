"""The budget ledger's keys read back: the month's spend summed from one listing (the cost is in each key).
Standard library only, Python 3.9 (it ships in the runtime artefact)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timezone

from submitter.contract.documents import submission_of

# ----------------------------------------------------------------------------------------- the ledger

LEDGER_EVERY_S = 60  # a running attempt's ledger entry is renewed this often: the ledger's lag while it runs
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
_LEDGER_NAME = re.compile(r"attempt-(?P<attempt>[0-9]{1,6})/(?P<cost>[0-9]{1,9}\.[0-9]{6})\.json")


def month_of(moment: datetime | None = None) -> str:
    """The calendar month (UTC) an attempt is booked in: the month it started, `YYYY-MM`."""
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m")


def is_month(text: str) -> bool:
    return isinstance(text, str) and _MONTH.fullmatch(text) is not None


def ledger_attempts(prefix: str, keys: Iterable[str]) -> dict[tuple[str, int], float]:
    """(run id, attempt) -> its cost, from the keys listed under `Layout.ledger(month)` (`prefix`). An attempt
    renews its entry by writing the new one, then removing the old one: when both are listed, the larger
    stands. Keys that are no ledger entry are ignored."""
    found: dict[tuple[str, int], float] = {}
    for key in keys:
        if not key.startswith(prefix):
            continue
        run_id, _, rest = key[len(prefix):].partition("/")
        match = _LEDGER_NAME.fullmatch(rest)
        if match is None or submission_of(run_id) is None:
            continue
        which = (run_id, int(match.group("attempt")))
        found[which] = max(found.get(which, 0.0), float(match.group("cost")))
    return found


def ledger_total(prefix: str, keys: Iterable[str]) -> float:
    """The month's spend (USD) from its listed ledger keys."""
    return round(sum(ledger_attempts(prefix, keys).values()), 6)


def usd(value: float) -> str:
    """An amount as the budget's messages show it: cents from $10, else to 1/100 of a cent ($0.0019)."""
    return f"${value:,.2f}" if abs(value) >= 10 else f"${value:.4f}"


def budget_reason(spent: float, budget: float, month: str) -> str:
    """Why a worker takes no more runs: the status reason of the runs it leaves."""
    return (f"monthly budget reached: {usd(spent)} recorded in {month} against SUBMITTER_BUDGET {usd(budget)}; "
            "not started")
