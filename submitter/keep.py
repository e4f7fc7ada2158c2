"""A failed run's kept instance, seen from the caller's side (docs/keep.md): `submit --keep-on-failure` over the
spec's limits.keep_on_failure, the refusal on AWS Batch, what `status` shows, and `cancel` ending a window early.
The worker's side (detach, tag, wait, terminate) is runtime/keep.py; clean-up and gc spare a kept instance
through its `submitter:keep-until` tag (backends/pool/capacity.py, sweep.py)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from submitter import contract, ownership
from submitter.aws import ec2 as ec2_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.errors import UsageError

if TYPE_CHECKING:  # `status` and `cost` use this module too: no spec models imported for them
    from submitter.spec.loader import LoadedSpec

Say = Callable[[str], None]
END_WAIT_S = 90.0  # the kept worker polls the cancel marker every few seconds and then writes its status
POLL_S = 3.0


def override(specs: list[LoadedSpec], text: str | None) -> list[LoadedSpec]:
    """The specs with `submit --keep-on-failure` in place of limits.keep_on_failure (None: as written)."""
    if text is None:
        return specs
    from submitter.spec.values import keep_seconds

    try:
        seconds = keep_seconds(text)
    except ValueError as exc:
        raise UsageError("--keep-on-failure", str(exc), "give a duration like 20m or 1h, or 0 to keep nothing") \
            from None
    out = []
    for loaded in specs:
        limits = loaded.spec.limits.model_copy(update={"keep_on_failure": seconds})
        out.append(dataclasses.replace(loaded, spec=loaded.spec.model_copy(update={"limits": limits})))
    return out


def check_backend(specs: list[LoadedSpec], backend: str | None) -> None:
    """Refuse a kept window under AWS Batch before anything is created: Batch owns its hosts and gives none back
    for inspection, so a window there would be a promise nothing keeps."""
    for loaded in specs:
        if loaded.spec.limits.keep_on_failure and (backend or loaded.spec.resources.backend) == "batch":
            raise UsageError(f"{loaded.path}: limits.keep_on_failure",
                             "a failed run's instance can only be kept on the pool backend; AWS Batch "
                             "(resources.backend or --backend batch) runs it on a host of its own",
                             "drop limits.keep_on_failure (or pass --keep-on-failure 0), or submit with "
                             "--backend pool")


def describe(doc: dict[str, Any], now: datetime | None = None) -> str | None:
    """`kept until HH:MM` for a run whose instance is kept now, `kept until HH:MM (ended: why)` once it ended;
    None when nothing was kept."""
    until = contract.parse_iso(doc.get(contract.KEPT_UNTIL))
    if until is None:
        return None
    text = f"kept until {until:%H:%M} UTC"
    if doc.get(contract.KEPT_ENDED):
        ended = contract.parse_iso(doc.get(contract.KEPT_ENDED))
        why = doc.get(contract.KEPT_END_REASON) or "ended"
        return f"{text} ({why}{f' at {ended:%H:%M}' if ended else ''})"
    if contract.kept_window(contract.Status.from_json(doc), now) is None:
        return f"{text} (over)"
    return text


def billed_until(doc: dict[str, Any], end: datetime | None, now: datetime) -> datetime | None:
    """When a run's instance stopped billing for it (`submitter cost`): its end, or its kept window's end (when
    the window ended, or now while it is open)."""
    kept = contract.parse_iso(doc.get(contract.KEPT_ENDED))
    if kept is None and contract.parse_iso(doc.get(contract.KEPT_UNTIL)) is not None:
        kept = min(now, contract.parse_iso(doc.get(contract.KEPT_UNTIL)) or now)
    return kept if end is not None and kept is not None and kept > end else end


def end_windows(aws: Aws, s3: S3, layout: contract.Layout, run_ids: list[str], say: Say,
                wait_s: float = END_WAIT_S, poll_s: float = POLL_S) -> list[str]:
    """After `cancel` wrote its marker: end the kept windows of the targeted runs. The kept worker sees the marker,
    writes how its window ended and powers off; an instance still there after `wait_s` is terminated here, once it
    is found tagged with the run's own submission. Returns the instances ended."""
    from submitter import tracking

    kept = {st.run_id: st for st in tracking.read_statuses(s3, layout, run_ids) if contract.kept_window(st)}
    if not kept:
        return []
    for st in kept.values():
        say(f"{st.run_id}: failed; ending the window of its kept instance {st.instance_id} (kept until "
            f"{st.extra.get(contract.KEPT_UNTIL)})")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not [st for st in tracking.read_statuses(s3, layout, list(kept)) if contract.kept_window(st)]:
            break
        time.sleep(poll_s)
    ec2 = ec2_api.client(aws)
    ended = []
    for st in kept.values():
        if not st.instance_id:
            continue
        found = ownership.instance(ec2, st.instance_id, ownership.submission_of_run(st.run_id), st.run_id)
        if found is not None and found["State"]["Name"] not in ("shutting-down", "terminated"):
            ec2_api.terminate(ec2, [st.instance_id])
        ended.append(st.instance_id)
        say(f"{st.run_id}: kept instance {st.instance_id} ended")
    return ended
