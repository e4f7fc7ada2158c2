"""The monthly budget (issue 18): ledger keys and sums (the contract package), the runtime's ledger (runtime/ledger.py),
a worker that winds down at the budget (runtime/pool.py), the Batch wrapper at the budget, the submit-side
check and its refusal (budget.py), and SUBMITTER_BUDGET (settings.py)."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from runtime_memory import MemoryStore

from submitter import budget, contract
from submitter import settings as settings_mod
from submitter.contract import Layout
from submitter.errors import SettingsError, UsageError
from submitter.plan import PriceLookup, make_plan
from submitter.runtime import ledger, pool
from submitter.runtime.batch import Wrapper
from submitter.runtime.imds import Imds
from submitter.settings import Settings
from submitter.spec import load

SUB = "exp1-20261130-120000-abcdef"
L = Layout("p")
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)

# ----------------------------------------------------------------------------------------- contract


def test_an_entry_names_month_run_attempt_and_cost() -> None:
    assert L.ledger_entry("2026-11", f"{SUB}-3", 2, 0.0123456) == f"p/ledger/2026-11/{SUB}-3/attempt-2/0.012346.json"
    assert L.ledger("2026-11") == "p/ledger/2026-11/" and L.ledgers == "p/ledger/"
    assert Layout("").ledger_entry("2026-12", SUB, 1, -1.0) == f"ledger/2026-12/{SUB}/attempt-1/0.000000.json"
    assert contract.month_of(NOW) == "2026-11" and contract.month_of(datetime(2027, 1, 1, tzinfo=timezone.utc)) \
        == "2027-01"
    assert contract.is_month("2026-11") and not contract.is_month("2026-13") and not contract.is_month("2026-1")


def test_the_month_sums_each_attempt_once_at_its_largest_entry_and_ignores_the_rest() -> None:
    prefix = L.ledger("2026-11")
    keys = [
        L.ledger_entry("2026-11", f"{SUB}-0", 1, 0.25),
        L.ledger_entry("2026-11", f"{SUB}-0", 1, 0.5),  # a renewal whose older entry was not removed
        L.ledger_entry("2026-11", f"{SUB}-0", 2, 0.125),  # the run's second attempt
        L.ledger_entry("2026-11", f"{SUB}-1", 1, 1.0),
        f"{prefix}{SUB}-2/attempt-1/lots.json",  # not a cost
        f"{prefix}not-a-run/attempt-1/9.000000.json",  # not a run id
        L.ledger_entry("2026-10", f"{SUB}-3", 1, 100.0),  # another month
    ]
    assert contract.ledger_attempts(prefix, keys) == {(f"{SUB}-0", 1): 0.5, (f"{SUB}-0", 2): 0.125,
                                                      (f"{SUB}-1", 1): 1.0}
    assert contract.ledger_total(prefix, keys) == 1.625
    assert contract.ledger_total(prefix, []) == 0.0


def test_a_thousand_attempts_sum_from_their_keys_alone() -> None:
    prefix = L.ledger("2026-11")
    keys = [L.ledger_entry("2026-11", f"{SUB}-{i}", 1, 0.01) for i in range(1000)]
    assert contract.ledger_total(prefix, keys) == pytest.approx(10.0)


# ----------------------------------------------------------------------------------------- runtime


def test_an_attempt_renews_its_one_entry_and_books_the_final_cost() -> None:
    store = MemoryStore()
    entry = ledger.Ledger(store, L, f"{SUB}-0", 1, {"instance_id": "i-1", "price": 0.5})
    entry.record(0.0)
    assert not entry.due()  # renewed just now
    entry.record(0.25)
    entry.record(0.5, final=True)
    keys = store.keys(L.ledgers)
    assert keys == [L.ledger_entry(entry.month, f"{SUB}-0", 1, 0.5)]
    doc = store.json(keys[0])
    assert doc["final"] is True and doc["cost"] == 0.5 and doc["instance_id"] == "i-1" and doc["run_id"] == f"{SUB}-0"
    assert ledger.month_spend(store, L) == 0.5


def test_a_failing_store_never_stops_the_run() -> None:
    class Broken(MemoryStore):
        def put_bytes(self, key: str, data: bytes, content_type: str = "text/plain") -> None:
            raise OSError("S3 is away")

        def keys(self, prefix: str) -> list[str]:
            raise OSError("S3 is away")

    store = Broken()
    ledger.Ledger(store, L, SUB, 1, {}).record(1.0)  # logged, not raised
    assert ledger.reached(store, L, {"budget": {"usd": 1.0}}) is None  # an unreadable ledger stops nothing


def test_reached_only_with_a_budget_and_at_or_over_it() -> None:
    store = MemoryStore()
    month = contract.month_of()
    store.put_json(L.ledger_entry(month, f"{SUB}-0", 1, 2.0), {})
    assert ledger.reached(store, L, {}) is None
    assert ledger.reached(store, L, {"budget": {"usd": 2.5}}) is None
    reason = ledger.reached(store, L, {"budget": {"usd": 2.0}})
    assert reason == f"monthly budget reached: $2.0000 recorded in {month} against SUBMITTER_BUDGET $2.0000; " \
                     "not started"
    assert ledger.budget_of({"budget": {"usd": "x"}}) is None and ledger.budget_of({"budget": 3}) is None


class QueueStore(MemoryStore):
    """MemoryStore whose queue answers receive (one message at a time, as the agent asks)."""

    def receive(self, queue_url: str, wait: int, visibility: int) -> list[dict[str, Any]]:
        return [self.queue.pop(0)] if self.queue else []


def test_a_worker_at_the_budget_ends_the_queued_runs_with_the_reason_and_leaves_as_drained() -> None:
    store = QueueStore("b")
    month = contract.month_of()
    store.put_json(L.ledger_entry(month, "other-20261130-120000-000000", 1, 5.0), {})
    for i in range(3):
        store.put_json(L.status(f"{SUB}-{i}"), {"run_id": f"{SUB}-{i}", "state": "queued", "created_at": "x"})
    store.put_json(L.status(f"{SUB}-2"), {"run_id": f"{SUB}-2", "state": "succeeded"})  # a duplicate message
    store.queue = [{"Body": json.dumps({"run_id": f"{SUB}-{i}"}), "ReceiptHandle": f"rh-{i}"} for i in range(3)]
    store.queue.append({"Body": json.dumps({"run_id": "../x"}), "ReceiptHandle": "rh-x"})
    args = pool.parse_args(["--submission", SUB, "--bucket", "b", "--prefix", "p", "--group", "g",
                            "--instance-id", "i-1", "--region", "us-east-1"])
    worker = pool.Agent(args, store=store, imds=Imds("http://127.0.0.1:9"))
    worker.host.sub = {"submission_id": SUB, "job": "exp1", "budget": {"usd": 4.0}}
    worker.queue_url = "q"
    reason = ledger.reached(store, L, worker.host.sub)
    assert reason is not None
    assert worker.wind_down(reason) == 0  # boot.sh: leave the group, no replacement
    for i in range(2):
        status = store.json(L.status(f"{SUB}-{i}"))
        assert status["state"] == contract.CANCELLED and status["reason"] == reason, status
        assert status["submission_id"] == SUB and status["ended_at"] and "started_at" not in status
    assert store.json(L.status(f"{SUB}-2"))["state"] == contract.SUCCEEDED
    assert store.sqs_calls == [("delete", f"rh-{i}") for i in (0, 1, 2, "x")]
    report = store.json(L.instance_report(SUB, "i-1"))
    assert report["state"] == contract.DRAINED and report["reason"] == reason
    assert [r["run_id"] for r in report["runs"]] == [f"{SUB}-0", f"{SUB}-1", f"{SUB}-2"]


class RecordingStore(MemoryStore):
    """Remembers every write in order."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: list[tuple[str, bytes]] = []

    def put_bytes(self, key: str, data: bytes, content_type: str = "text/plain") -> None:
        self.puts.append((key, bytes(data)))
        super().put_bytes(key, data, content_type)


def _batch(tmp_path: Path, budget_usd: float | None) -> tuple[RecordingStore, Wrapper]:
    store = RecordingStore()
    sub: dict[str, Any] = {
        "submission_id": SUB, "job": "exp1", "command": [sys.executable, "-c", "import time; time.sleep(0.5)"],
        "volume_mount": str(tmp_path / "data"), "outputs": None, "checkpoints": None, "max_runtime": 600,
        "retries": {"on_interruption": 0, "on_failure": 0}, "inputs": [], "secrets": {"names": []}}
    if budget_usd is not None:
        sub["budget"] = {"usd": budget_usd}
    store.put_json(L.submission_doc(SUB), sub)
    store.put_json(L.batch_runs(SUB), [contract.run_message(SUB, None, {})])
    environ = {"SUBMITTER_SUBMISSION_ID": SUB, "SUBMITTER_PREFIX": "p", "AWS_BATCH_JOB_ATTEMPT": "1",
               "SUBMITTER_BATCH_ATTEMPTS": "1", "PATH": "/usr/bin:/bin"}
    wrapper = Wrapper(store, environ, work=tmp_path / "work")
    wrapper.host.price = 36.0  # USD an hour: a cent a second, so half a second is measurable
    return store, wrapper


def test_a_batch_attempt_books_its_cost_and_a_batch_job_at_the_budget_starts_nothing(tmp_path: Path) -> None:
    store, wrapper = _batch(tmp_path, budget_usd=None)
    assert wrapper.main() == 0
    status = store.json(L.status(SUB))
    (key,) = store.keys(L.ledgers)
    assert store.json(key)["final"] is True and store.json(key)["cost"] == pytest.approx(status["cost"], abs=1e-6)
    assert status["cost"] >= 0.005  # half a second at a cent a second

    # The final entry is booked before the final status: `submit --wait` may remove the role once it sees that.
    final_entry = max(i for i, (k, _) in enumerate(store.puts) if k.startswith(L.ledgers))
    final_status = max(i for i, (k, _) in enumerate(store.puts) if k == L.status(SUB))
    assert final_entry < final_status and b'"final": true' in store.puts[final_entry][1]

    store2, wrapper2 = _batch(tmp_path / "2", budget_usd=0.001)
    store2.objects.update({k: v for k, v in store.objects.items() if k.startswith(L.ledgers)})
    assert wrapper2.main() == 1  # ends the job, not retried
    status2 = store2.json(L.status(SUB))
    assert status2["state"] == contract.CANCELLED and "monthly budget reached" in status2["reason"]
    assert "started_at" not in status2 and not store2.exists(L.container_log(SUB))


# ----------------------------------------------------------------------------------------- submit side


@pytest.fixture()
def plan(tmp_path: Path) -> Any:
    (tmp_path / "Dockerfile.train").write_text("FROM python:3.11-slim\n")
    (tmp_path / "job.yaml").write_text("name: exp1\ncommand: [python, train.py]\nresources: {instance_types: "
                                       "[c5.large]}\nlimits: {max_runtime: 1h}\nsweep: {LR: [1, 2]}\n")
    made = make_plan(load(tmp_path / "job.yaml"), Settings(bucket="bkt", budget=10.0),
                     PriceLookup(None, "unknown"), now=NOW, token="abc123")
    assert made.budget == 10.0
    return dataclasses.replace(made, estimate={"total_at_most": 4.0, "runs": 2})


def test_worst_and_expected_figures(plan: Any) -> None:
    assert budget.figure(plan, budget.WORST) == (4.0, "worst case")
    assert budget.figure(plan, budget.EXPECTED) == (4.0, "worst case: the plan has no expected cost")
    expected = dataclasses.replace(plan, estimate={**plan.estimate, "expected": {"cost": 1.0, "cost_high": 1.5}})
    assert budget.figure(expected, budget.EXPECTED) == (1.5, "expected cost, upper end")
    assert budget.figure(expected, budget.WORST) == (4.0, "worst case")
    unknown = dataclasses.replace(plan, estimate={"total_at_most": "unknown", "total_at_most_at_max_price": 6.0})
    assert budget.figure(unknown, budget.WORST)[0] == 6.0
    unbounded = dataclasses.replace(plan, estimate={"total_at_most": "unknown"})
    assert budget.figure(unbounded, budget.WORST)[0] is None


def test_a_submission_that_fits_passes_and_the_dry_run_check_says_it_read_nothing(plan: Any) -> None:
    fits = budget.check(10.0, [plan, plan], budget.WORST, 2.0, now=NOW)
    assert fits.this == 8.0 and fits.fits is True and fits.remaining == 8.0
    budget.refuse(fits)  # nothing raised
    offline = budget.check(10.0, [plan], budget.WORST, None, now=NOW)
    assert offline.fits is None and offline.to_json()["ledger"].startswith("not read")
    assert "was not read" in offline.describe()
    budget.refuse(offline)


def test_the_refusal_names_the_figures_and_the_next_step(plan: Any) -> None:
    over = budget.check(10.0, [plan], budget.WORST, 7.5, now=NOW)
    with pytest.raises(UsageError) as info:
        budget.refuse(over)
    error = info.value
    assert error.exit_code == 2 and error.where == "SUBMITTER_BUDGET"
    assert error.what == ("this submission would pass the monthly budget: budget: $10.00 for 2026-11; spent $7.5000, "
                          "remaining $2.5000; this submission $4.0000 (worst case)")
    assert "--budget-mode expected" in (error.next_step or "") and "cost --month" in (error.next_step or "")
    # With the expected cost the same submission fits.
    expected = dataclasses.replace(plan, estimate={**plan.estimate, "expected": {"cost_high": 2.0}})
    budget.refuse(budget.check(10.0, [expected], budget.EXPECTED, 7.5, now=NOW))
    with pytest.raises(UsageError) as info:
        budget.refuse(budget.check(10.0, [dataclasses.replace(plan, estimate={})], budget.WORST, 0.0, now=NOW))
    assert "without a bound" in info.value.what and "max_price" in (info.value.next_step or "")


def test_the_setting() -> None:
    assert settings_mod.load({}, Path("/nonexistent")).budget is None
    assert settings_mod.load({"SUBMITTER_BUDGET": "500"}, Path("/nonexistent")).budget == 500.0
    assert settings_mod.load({"SUBMITTER_BUDGET": "$1,250.50"}, Path("/nonexistent")).budget == 1250.5
    for bad in ("abc", "0", "-5", "nan", "inf"):
        with pytest.raises(SettingsError) as info:
            settings_mod.load({"SUBMITTER_BUDGET": bad}, Path("/nonexistent"))
        assert info.value.where == "SUBMITTER_BUDGET" and "SUBMITTER_BUDGET=500" in (info.value.next_step or "")
