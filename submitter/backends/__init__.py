"""What runs a plan: one interface (base.Backend) and its implementations, `pool` (spot workers of our own)
and `batch` (AWS Batch). The only place a backend is chosen by name."""

from __future__ import annotations

from typing import Any

from submitter import contract
from submitter.aws.s3 import S3
from submitter.backends.base import Backend, Ledger, Orphan, Scope
from submitter.errors import UsageError
from submitter.plan import Plan

__all__ = ["Backend", "Ledger", "Orphan", "Scope", "all_backends", "dry_run", "for_plan", "for_submission", "get"]

NAMES = ("pool", "batch")


def get(name: str | None, where: str = "--backend") -> Backend:
    """The backend called `name` (None: the default, the pool); a UsageError naming the choices otherwise."""
    if name in (None, "pool"):
        from submitter.backends.pool import PoolBackend

        return PoolBackend()
    if name == "batch":
        from submitter.backends.batch import BatchBackend

        return BatchBackend()
    raise UsageError(where, f"{name!r} is not a backend", f"use {' or '.join(f'{where} {n}' for n in NAMES)}")


def for_plan(plan: Plan) -> Backend:
    return get(plan.backend, "--backend" if plan.backend != plan.spec.resources.backend else "resources.backend")


def for_submission(s3: S3, layout: contract.Layout, submission: str) -> Backend:
    """The backend an earlier submit used, from what it left in S3 (a Batch submission records its job)."""
    from submitter.backends.batch import submit

    return get("batch" if submit.is_batch(s3, layout, submission) else "pool")


def all_backends() -> list[Backend]:
    return [get(name) for name in NAMES]


def dry_run(plan: Plan) -> dict[str, Any]:
    """The plan as `submit --dry-run --json` prints it: the shared part and the backend's own."""
    return {**plan.to_json(), **for_plan(plan).describe(plan)}
