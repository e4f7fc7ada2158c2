"""The run index (docs/runtime-contract.md, Run index): what `status` needs of every run of a submission from one
listing, instead of one status document per run.

Whoever writes a run's status document writes, right after it and only when the run's state or attempt changed,
one empty object `Layout.index_entry(SUB, RUN, NAME)` whose NAME carries the table's row:

    SEQ_STATE_ATTEMPT_EXIT_TYPE_AZ_INSTANCE_PRICE_COST_STARTED_ENDED

SEQ orders a run's entries whoever wrote them (submit, the agent, cancel): it follows the run's lifecycle
(attempt, then where in the attempt), so a reader takes each run's highest SEQ and an entry left behind is
harmless. Nothing is ever rewritten in place, so writers never race on one object. The status document stays
the truth: a reader reads it for the runs the index cannot settle (active, a tie, no entry).

Standard library only and Python 3.9 compatible: it ships in the instance runtime artefact.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable

from submitter import contract

FIELDS = ("seq", "state", "attempt", "exit_code", "instance_type", "availability_zone", "instance_id", "price",
          "cost", "started_at", "ended_at")
_SAFE = re.compile(r"[A-Za-z0-9.+-]{1,32}")  # S3's safe key characters, never the separator `_` or `/`
LONGEST_ENTRY = "_".join(["0" * 10, "interrupted"] + ["x" * 32] * (len(FIELDS) - 2))  # plan_limits: key length
_COMPACT = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z")
_STEPS = 5  # places in one attempt: the SEQ of attempt N's entries is N * _STEPS + its step


def _step(state: str, attempt: int) -> int:
    if state == contract.QUEUED and attempt == 0:
        return 0  # staged by submit, never started
    if state == contract.STARTING:
        return 1
    if state == contract.RUNNING:
        return 2
    if state in (contract.QUEUED, contract.INTERRUPTED):
        return 3  # attempt N ended and the run waits for another
    return 4  # succeeded, failed, cancelled: nothing after them in this attempt


def seq(status: contract.Status) -> int:
    return max(status.attempt, 0) * _STEPS + _step(status.state, status.attempt)


def _text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    text = str(value)
    return text if _SAFE.fullmatch(text) else ""


def entry(status: contract.Status) -> str:
    """The entry's NAME for `status`; a value that is not plain (safe characters, short) is left empty."""
    times = [(t or "").replace("-", "").replace(":", "") for t in (status.started_at, status.ended_at)]
    values = [f"{seq(status):010d}", status.state, status.attempt, status.exit_code, status.instance_type,
              status.availability_zone, status.instance_id, status.price, status.cost, *times]
    return "_".join(_text(v) for v in values)


def parse(run_id: str, name: str) -> dict[str, Any] | None:
    """The row an entry NAME carries (a status document's fields), None when it is not one."""
    parts = name.split("_")
    if len(parts) != len(FIELDS) or not parts[0].isdigit() or parts[1] not in contract.STATES:
        return None
    row: dict[str, Any] = {"run_id": run_id, "seq": int(parts[0])}
    for key, text in zip(FIELDS[1:], parts[1:]):
        if not text:
            continue
        try:
            if key in ("attempt", "exit_code"):
                row[key] = int(text)
            elif key in ("price", "cost"):
                row[key] = float(text)
            elif key in ("started_at", "ended_at"):
                match = _COMPACT.fullmatch(text)
                if match:
                    row[key] = "{}-{}-{}T{}:{}:{}Z".format(*match.groups())
            else:
                row[key] = text
        except ValueError:
            return None
    return row


def latest(keys: list[str], layout: contract.Layout, submission_id: str) -> dict[str, tuple[dict[str, Any], bool]]:
    """Per run of `submission_id`: the row of its highest-SEQ entry, and whether another entry ties with it (two
    writers disagree: the reader reads the document). Keys of other runs or of no known shape are ignored."""
    prefix = layout.index(submission_id)
    best: dict[str, tuple[dict[str, Any], bool]] = {}
    for key in keys:
        run_id, _, name = key[len(prefix):].partition("/") if key.startswith(prefix) else ("", "", "")
        if not contract.is_run_of(run_id, submission_id) or "/" in name:
            continue
        row = parse(run_id, name)
        if row is None:
            continue
        held = best.get(run_id)
        if held is None or row["seq"] > held[0]["seq"]:
            best[run_id] = (row, False)
        elif row["seq"] == held[0]["seq"] and row != held[0]:
            best[run_id] = (held[0], True)
    return best


def entry_key(layout: contract.Layout, status: contract.Status) -> str | None:
    """The index entry's key for `status`, as every writer names it; None for a run id of no submission's shape."""
    sub = contract.submission_of(status.run_id)  # from the id's shape, never from what a document claims
    return None if sub is None else layout.index_entry(sub, status.run_id, entry(status))


class Indexer:
    """Writes a run's index entries, once per state or attempt change: `put(key)` the new one (an empty object),
    then `delete(key)` the one it supersedes (the writer's own last, or the entry of the document it started
    from: `follow`), so a run keeps about one entry and a listing stays one page per 1,000 runs. A delete that
    fails is harmless (readers take the highest SEQ); it is not retried."""

    def __init__(self, layout: contract.Layout, put: Callable[[str], None],
                 delete: Callable[[str], None] | None = None) -> None:
        self.layout, self.put, self.delete = layout, put, delete
        self.written: dict[str, tuple[str, int]] = {}
        self.last: dict[str, str] = {}

    def key(self, status: contract.Status) -> str | None:
        return entry_key(self.layout, status)

    def follow(self, previous: contract.Status) -> None:
        """`previous` is the run's document as read before changing it: its entry is the one to supersede."""
        key = self.key(previous)
        if key is not None:
            self.last[previous.run_id] = key

    def write(self, status: contract.Status) -> None:
        key = self.key(status)
        # Starting -> running is no change here: a reader reads an active run's document anyway.
        change = ("active" if status.state in contract.ACTIVE else status.state, status.attempt)
        if key is None or self.written.get(status.run_id) == change:
            return
        self.put(key)
        self.written[status.run_id] = change
        old, self.last[status.run_id] = self.last.get(status.run_id), key
        if self.delete is not None and old is not None and old != key:
            with contextlib.suppress(Exception):  # harmless: readers take the highest SEQ; `status` stays right
                self.delete(old)


def put_status(store: Any, layout: contract.Layout, status: contract.Status,
               previous: contract.Status | None = None) -> None:
    """A status document and its index entry, for a writer that changes the state (submit's staging, cancel,
    stranded runs): `store` is the submit side's S3 or the runtime's Store (put_json, put_bytes, delete).
    `previous`, the document it replaces, names the entry superseded."""
    store.put_json(layout.status(status.run_id), status.to_json())
    indexer = Indexer(layout, lambda key: store.put_bytes(key, b""), store.delete)
    if previous is not None:
        indexer.follow(previous)
    indexer.write(status)
