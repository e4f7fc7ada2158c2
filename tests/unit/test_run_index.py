"""The run index (runtime/index.py): entry names, their order across a run's life, and what a reader makes of a
listing (the highest SEQ per run; stale, foreign, tied and malformed entries)."""

from __future__ import annotations

from submitter import contract
from submitter.runtime import index

SUB = "exp-20261126-070000-abc123"
LAYOUT = contract.Layout("p")


def _st(state: str, attempt: int = 0, run: str = f"{SUB}-0", **fields: object) -> contract.Status:
    return contract.Status(run, SUB, "exp", state, attempt=attempt, **fields)  # type: ignore[arg-type]


def test_seq_follows_a_run_s_life_whoever_writes() -> None:
    life = [_st(contract.QUEUED), _st(contract.STARTING, 1), _st(contract.RUNNING, 1), _st(contract.INTERRUPTED, 1),
            _st(contract.STARTING, 2), _st(contract.RUNNING, 2), _st(contract.QUEUED, 2), _st(contract.STARTING, 3),
            _st(contract.SUCCEEDED, 3)]
    seqs = [index.seq(s) for s in life]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # cancel (the client) after an interruption outranks it; a lost attempt's next start outranks its running
    assert index.seq(_st(contract.CANCELLED, 1)) > index.seq(_st(contract.INTERRUPTED, 1))
    assert index.seq(_st(contract.CANCELLED, 0)) > index.seq(_st(contract.QUEUED, 0))
    assert index.seq(_st(contract.STARTING, 2)) > index.seq(_st(contract.RUNNING, 1))
    assert index.seq(_st(contract.FAILED, 1)) > index.seq(_st(contract.RUNNING, 1))


def test_an_entry_carries_the_table_row_and_parses_back() -> None:
    st = _st(contract.FAILED, 2, exit_code=1, instance_type="c5.large", availability_zone="us-east-1b",
             instance_id="i-0123456789abcdef0", price=0.0316, cost=0.0125, started_at="2026-11-26T07:00:00Z",
             ended_at="2026-11-26T07:40:05Z", reason="exit code 1")
    name = index.entry(st)
    assert "/" not in name and len(name) < 200
    row = index.parse(st.run_id, name)
    assert row == {"run_id": st.run_id, "seq": index.seq(st), "state": contract.FAILED, "attempt": 2, "exit_code": 1,
                   "instance_type": "c5.large", "availability_zone": "us-east-1b",
                   "instance_id": "i-0123456789abcdef0", "price": 0.0316, "cost": 0.0125,
                   "started_at": "2026-11-26T07:00:00Z", "ended_at": "2026-11-26T07:40:05Z"}


def test_values_that_are_not_plain_are_left_out_of_the_name() -> None:
    st = _st(contract.SUCCEEDED, 1, instance_type="c5.large/../x", availability_zone="us_east", instance_id="x" * 99)
    name = index.entry(st)
    assert name.count("_") == len(index.FIELDS) - 1 and "/" not in name
    row = index.parse(st.run_id, name)
    assert row is not None and "instance_type" not in row and "availability_zone" not in row
    assert "instance_id" not in row


def test_malformed_names_are_no_entries() -> None:
    run = f"{SUB}-0"
    good = index.entry(_st(contract.SUCCEEDED, 1))
    assert index.parse(run, good) is not None
    assert index.parse(run, good + "_x") is None  # a field too many
    assert index.parse(run, good.replace(contract.SUCCEEDED, "done")) is None  # no state of the contract
    assert index.parse(run, "x" + good[1:]) is None  # no SEQ
    assert index.parse(run, good.replace("_1_", "_one_", 1)) is None  # an attempt that is no number


def _key(st: contract.Status) -> str:
    return LAYOUT.index_entry(SUB, st.run_id, index.entry(st))


def test_the_reader_takes_each_run_s_highest_entry_and_ignores_what_is_not_its_own() -> None:
    a, b = f"{SUB}-0", f"{SUB}-1"
    keys = [_key(_st(contract.QUEUED, run=a)), _key(_st(contract.STARTING, 1, run=a)),
            _key(_st(contract.SUCCEEDED, 1, run=a, cost=0.5)),  # the stale two above are left (a failed delete)
            _key(_st(contract.QUEUED, run=b)),
            LAYOUT.index_entry("other-20261126-070000-abc123", "other-20261126-070000-abc123-0",
                               index.entry(_st(contract.FAILED, 1, run="other-20261126-070000-abc123-0"))),
            LAYOUT.index_entry(SUB, f"{SUB}-2", "not-an-entry"),
            LAYOUT.index_entry(SUB, "../x", index.entry(_st(contract.FAILED, 1))),
            LAYOUT.index_entry(SUB, a, "nested/" + index.entry(_st(contract.FAILED, 9, run=a)))]
    latest = index.latest(list(reversed(keys)), LAYOUT, SUB)
    assert set(latest) == {a, b}
    assert latest[a][0]["state"] == contract.SUCCEEDED and latest[a][0]["cost"] == 0.5 and not latest[a][1]
    assert latest[b][0]["state"] == contract.QUEUED


def test_two_different_entries_at_the_same_seq_are_a_tie_the_reader_settles_from_the_document() -> None:
    run = f"{SUB}-0"
    keys = [_key(_st(contract.SUCCEEDED, 1, run=run)), _key(_st(contract.CANCELLED, 1, run=run))]
    (row, tied), = index.latest(keys, LAYOUT, SUB).values()
    assert tied and row["run_id"] == run
    same = [_key(_st(contract.SUCCEEDED, 1, run=run))] * 2
    assert not index.latest(same, LAYOUT, SUB)[run][1]


def test_the_indexer_writes_on_a_change_only_and_deletes_what_it_supersedes() -> None:
    put: list[str] = []
    deleted: list[str] = []
    writer = index.Indexer(LAYOUT, put.append, deleted.append)
    queued = _st(contract.QUEUED)
    writer.follow(queued)  # the document the attempt starts from (written by submit)
    starting = _st(contract.STARTING, 1, instance_type="c5.large")
    writer.write(starting)
    writer.write(_st(contract.RUNNING, 1, instance_type="c5.large", cost=0.01))  # no change for the index
    writer.write(_st(contract.RUNNING, 1, instance_type="c5.large", cost=0.02))  # a heartbeat
    writer.write(_st(contract.SUCCEEDED, 1, instance_type="c5.large", cost=0.03))
    assert put == [_key(starting), _key(_st(contract.SUCCEEDED, 1, instance_type="c5.large", cost=0.03))]
    assert deleted == [_key(queued), _key(starting)]


def test_a_failing_delete_is_harmless() -> None:
    put: list[str] = []

    def refuse(key: str) -> None:
        raise RuntimeError("AccessDenied")

    writer = index.Indexer(LAYOUT, put.append, refuse)
    writer.follow(_st(contract.QUEUED))
    writer.write(_st(contract.STARTING, 1))
    assert len(put) == 1


def test_a_run_id_of_no_submission_gets_no_entry() -> None:
    put: list[str] = []
    index.Indexer(LAYOUT, put.append).write(contract.Status("../../x", state=contract.FAILED))
    assert put == []
