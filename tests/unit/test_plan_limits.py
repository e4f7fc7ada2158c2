"""AWS's limits checked on the plan (submitter/plan_limits.py): each crossing is refused before anything is
created, naming the spec field or setting and the next step; a value just under each limit is accepted."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from submitter import contract, plan_limits
from submitter.aws import limits, sqs
from submitter.backends.pool import Names, pool_plan
from submitter.errors import SettingsError, SpecError, UsageError
from submitter.plan import Plan, PriceLookup, make_plan
from submitter.settings import Settings
from submitter.spec import JobSpec, LoadedSpec, Run, load

NOW = datetime(2026, 11, 26, 7, 0, 0, tzinfo=timezone.utc)
URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/train@sha256:" + "0" * 64
REPO = Path(__file__).resolve().parents[2]


def _plan(fields: dict[str, Any], tmp_path: Path, backend: str = "pool", local: dict[str, Path] | None = None,
          **settings: Any) -> Plan:
    """A plan of a spec built in memory (large values need no YAML file: the loader caps file sizes)."""
    doc = {"name": "lim", "command": ["python", "t.py"], "image": {"uri": URI},
           "resources": {"instance_types": ["c5.large"]}, **fields}
    loaded = LoadedSpec(tmp_path / "job.yaml", JobSpec.model_validate(doc), None, None, local or {})
    return make_plan(loaded, Settings(bucket="bkt", **settings), PriceLookup(None, "unknown"), now=NOW,
                     token="abc123", account="123456789012", backend=backend)


def _refused(plan: Plan) -> list[str]:
    """The refusals as the user reads them: `field: message` per problem."""
    with pytest.raises(SpecError) as caught:
        plan_limits.check(plan)
    return [f"{p.field}: {p.message}" for p in caught.value.problems]


@pytest.mark.parametrize("backend", ["pool", "batch"])
def test_ordinary_specs_cross_no_limit(backend: str) -> None:
    for spec in (REPO / "jobs").glob("*.yaml"):
        plan = make_plan(load(spec), Settings(bucket="bkt"), PriceLookup(None, "unknown"), now=NOW, token="abc123",
                         backend=backend)
        assert plan_limits.crossings(plan) == [], spec


# ---------------------------------------------------------------------------------------------- env and messages


def test_a_2_mb_env_value_is_refused_naming_the_variable_and_the_next_step(tmp_path: Path) -> None:
    (line,) = _refused(_plan({"env": {"BIG": "x" * 2_000_000}}, tmp_path))
    assert line.startswith("env.BIG: environment variable BIG: 2,000,005 bytes; at most 131,072")
    assert "pass data as inputs" in line


def test_one_variable_just_under_the_kernels_per_string_limit_is_accepted(tmp_path: Path) -> None:
    value = "x" * (plan_limits.ENV_STRING_BYTES - len("V=") - 1)
    plan_limits.check(_plan({"env": {"V": value}}, tmp_path))
    assert _refused(_plan({"env": {"V": value + "x"}}, tmp_path))[0].startswith("env.V: ")


def test_20000_env_vars_cross_one_sqs_message(tmp_path: Path) -> None:
    env = {f"VAR_{i:05d}": "value" for i in range(20_000)}
    (line,) = _refused(_plan({"env": env}, tmp_path))
    assert line.startswith("env: the largest run message (env and sweep values, as JSON): ")
    assert "at most 262,144" in line


def _fill(target: int, run_id: str, index: int | None, fixed: dict[str, str]) -> dict[str, str]:
    """`fixed` plus variables of at most 100 KB each that bring the run's message to exactly `target` bytes."""
    env = dict(fixed)
    for i in range(20):
        size = len(sqs.body(contract.run_message(run_id, index, env)).encode())
        if size >= target:
            break
        key = f"F{i}"
        overhead = len(sqs.body(contract.run_message(run_id, index, {**env, key: ""})).encode()) - size
        env[key] = "y" * min(100_000, target - size - overhead)
    assert len(sqs.body(contract.run_message(run_id, index, env)).encode()) == target
    return env


def test_a_message_of_exactly_256_kib_is_accepted_and_one_byte_more_refused(tmp_path: Path) -> None:
    run_id = "lim-20261126-070000-abc123"
    env = _fill(limits.SQS_MESSAGE_BYTES, run_id, None, {})
    plan_limits.check(_plan({"env": env}, tmp_path))
    env["F0"] += "y"
    assert _refused(_plan({"env": env}, tmp_path))[0].startswith("env: the largest run message")


def test_sweep_values_that_push_the_largest_message_over_are_named_as_the_cause(tmp_path: Path) -> None:
    sweep = {"LR": ["0.1", "0.01"], "NOTE": ["short", "z" * 100_000]}
    env = _fill(limits.SQS_MESSAGE_BYTES - 50_000, "lim-20261126-070000-abc123-3", 3, {})
    (line,) = _refused(_plan({"env": env, "sweep": sweep}, tmp_path))
    assert line.startswith("sweep: the largest run message")
    # Without the long sweep value every run's message fits.
    plan_limits.check(_plan({"env": env, "sweep": {**sweep, "NOTE": ["short", "long"]}}, tmp_path))


def test_the_queue_gets_the_messages_in_batches_sqs_accepts() -> None:
    bodies = ["a" * 100_000] * 5 + ["b"] * 15
    groups = sqs.batches(bodies)
    assert [x for g in groups for x in g] == bodies
    assert all(len(g) <= limits.SQS_BATCH_ENTRIES for g in groups)
    assert all(sum(len(x) for x in g) <= limits.SQS_MESSAGE_BYTES for g in groups)
    assert [len(g) for g in groups] == [2, 2, 10, 6]


# ---------------------------------------------------------------------------------------------- the pool


def test_41_instance_types_cross_the_groups_overrides_and_40_do_not(tmp_path: Path) -> None:
    types = [f"x{i}.large" for i in range(41)]
    (line,) = _refused(_plan({"resources": {"instance_types": types}}, tmp_path))
    assert line == ("resources.instance_types: Auto Scaling group overrides: 41 instance types; at most 40; "
                    "list at most 40 instance types")
    plan = _plan({"resources": {"instance_types": types[:40]}}, tmp_path)
    assert len(pool_plan(plan).group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]) == 40
    plan_limits.check(plan)


def test_the_longest_job_name_under_the_longest_prefix_keeps_every_name_in_its_limits(tmp_path: Path) -> None:
    name = "n" * 40
    for backend in ("pool", "batch"):
        plan = _plan({"name": name, "secrets": ["TOKEN"]}, tmp_path, backend=backend, prefix="p" * 128)
        assert plan_limits.crossings(plan) == []
    names = Names.of(plan.submission_id)
    assert len(names.role) == 64 and len(names.queue) <= 80
    # What the names are checked with refuses one character more, as IAM does.
    assert limits.name("IAM role name", "r" * 65, limits.IAM_ROLE_NAME) is not None
    assert limits.name("IAM role name", "r" * 64, limits.IAM_ROLE_NAME) is None


def _s3_inputs(count: int, key_chars: int) -> list[dict[str, str]]:
    return [{"source": f"s3://data-bucket/{i:03d}{'k' * key_chars}/", "target": f"/data/in{i}"} for i in range(count)]


def test_an_instance_role_policy_over_iams_inline_limit_is_refused_naming_inputs(tmp_path: Path) -> None:
    (line,) = _refused(_plan({"inputs": _s3_inputs(20, 600)}, tmp_path))
    assert line.startswith("inputs: the inline policy of IAM role submitter-lim-20261126-070000-abc123: ")
    assert "IAM takes at most 10,240" in line and "list fewer inputs" in line
    plan_limits.check(_plan({"inputs": _s3_inputs(3, 600)}, tmp_path))


def test_the_policy_is_measured_as_iam_counts_it_at_the_boundary(tmp_path: Path) -> None:
    def size(n: int) -> int:
        plan = _plan({"inputs": _s3_inputs(4, n)}, tmp_path)
        return limits.policy_chars(plan_limits.pool_policy(plan))

    base = size(0)
    grow = size(1) - base  # one character more in each input's key
    under = (limits.IAM_ROLE_INLINE_CHARS - base) // grow
    assert size(under) <= limits.IAM_ROLE_INLINE_CHARS < size(under + 1)
    plan_limits.check(_plan({"inputs": _s3_inputs(4, under)}, tmp_path))
    assert _refused(_plan({"inputs": _s3_inputs(4, under + 1)}, tmp_path))[0].startswith("inputs: ")


def _prefixes(count: int, chars: int) -> list[str]:
    return [f"s3://team-data/{i:02d}{'p' * chars}/" for i in range(count)]


@pytest.mark.parametrize("backend", ["pool", "batch"])
def test_a_job_role_policy_over_the_inline_limit_is_refused_naming_permissions(tmp_path: Path, backend: str) -> None:
    lines = _refused(_plan({"permissions": {"s3_read": _prefixes(20, 300)}}, tmp_path, backend=backend))
    assert len(lines) == 1 and lines[0].startswith("permissions: the inline policy of IAM role submitter-lim-")
    assert "a common parent prefix" in lines[0]
    plan_limits.check(_plan({"permissions": {"s3_read": _prefixes(20, 100)}}, tmp_path, backend=backend))


# ---------------------------------------------------------------------------------------------- Batch, SSM, keys, tags


def test_a_batch_array_over_10000_runs_is_refused_naming_the_sweep(tmp_path: Path) -> None:
    plan = _plan({"sweep": {"I": ["1", "2"]}}, tmp_path, backend="batch")
    runs = [Run(f"{plan.submission_id}-{i}", i, {"I": str(i)}, {"I": str(i)}) for i in range(10_001)]
    lines = _refused(dataclasses.replace(plan, runs=runs))
    assert lines == ["sweep: Batch array size: 10,001 runs; 2 to 10,000; split the sweep into specs of at most "
                     "10,000 runs"]
    plan_limits.check(dataclasses.replace(plan, runs=runs[:10_000]))


def test_a_secret_name_longer_than_ssm_takes_is_refused_and_the_longest_that_fits_accepted(tmp_path: Path) -> None:
    arn = f"arn:aws:ssm:us-east-1:123456789012:parameter{contract.secrets_prefix('lim-20261126-070000-abc123')}"
    longest = "S" * (limits.SSM_NAME_CHARS - len(arn))
    plan_limits.check(_plan({"secrets": [longest]}, tmp_path))
    (line,) = _refused(_plan({"secrets": ["TOKEN", longest + "S"]}, tmp_path))
    assert line.startswith("secrets.1: SSM parameter name of secret SSSS") and "at most 1,011" in line


def test_a_secret_value_over_ssms_standard_size_is_refused_without_showing_it() -> None:
    plan_limits.check_secret_values({"TOKEN": "v" * 4096})
    with pytest.raises(UsageError) as caught:
        plan_limits.check_secret_values({"TOKEN": "v" * 4097})
    assert caught.value.where == "secret TOKEN (environment or .env)" and "4,097 bytes" in caught.value.what
    assert "vvvv" not in caught.value.render() and caught.value.exit_code == 2


def test_a_staged_file_whose_key_crosses_s3s_limit_is_refused_naming_the_input(tmp_path: Path) -> None:
    data = tmp_path / "data"
    deep = data / ("d" * 200) / ("e" * 200) / ("f" * 200) / ("g" * 200)
    deep.mkdir(parents=True)
    (deep / "ok.txt").write_text("1")
    inputs = [{"source": "./data", "target": "/data/in"}]
    plan_limits.check(_plan({"inputs": inputs}, tmp_path, local={"./data": data}))
    (deep / ("h" * 250)).write_text("2")
    (line,) = _refused(_plan({"inputs": inputs}, tmp_path, local={"./data": data}))
    assert line.startswith("inputs.0.source: S3 key of file 'dddd") and "at most 1,024" in line
    assert "rename or move the file" in line


def test_a_staged_file_whose_name_is_not_utf8_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with open(os.path.join(os.fsencode(data), b"bad-\xff.txt"), "w") as handle:
        handle.write("x")
    (line,) = _refused(_plan({"inputs": [{"source": "./data", "target": "/data/in"}]}, tmp_path,
                             local={"./data": data}))
    assert line.startswith("inputs.0.source: file 'bad-?.txt': its name is not UTF-8")


def test_a_tag_value_too_long_is_blamed_on_the_setting_it_comes_from(tmp_path: Path) -> None:
    plan = _plan({}, tmp_path)
    forged = dataclasses.replace(plan, tags={**plan.tags, contract.TAG_PREFIX: "p" * 257})
    with pytest.raises(SettingsError) as caught:
        plan_limits.check(forged)
    assert caught.value.where == "SUBMITTER_PREFIX" and "257 characters; at most 256" in caught.value.what
