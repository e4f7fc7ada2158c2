"""Hostile YAML in a spec: each class is refused quickly as a SpecError naming the line and the problem (exit 2
through the CLI, no traceback), never a hang or another exception; an ordinary spec still loads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from submitter.cli import app
from submitter.errors import SpecError
from submitter.spec import load
from submitter.spec.yaml_bounded import MAX_ALIAS_NODES, MAX_DEPTH, MAX_SPEC_BYTES, compose, construct

# Five lines, so a hostile line appended to it is line 6; image.uri keeps the test off the disk (no build).
VALID = ("name: exp1\n"
         "command: [python, train.py]\n"
         f"image: {{uri: '123456789012.dkr.ecr.us-east-1.amazonaws.com/train@sha256:{'a' * 64}'}}\n"
         "resources:\n"
         "  instance_types: [c5.large]\n")

BOMB = "".join([
    'env: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n',  # line 6
    *(f"x{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)),  # lines 7..15
])

# (id, text appended to VALID, line, words in the message)
CASES = [
    ("alias-bomb", BOMB, 10, f"expands the spec past {MAX_ALIAS_NODES:,} values reached through aliases"),
    ("recursive-alias", "sweep: &loop {LR: [*loop]}\n", 6, "alias *loop is inside the node it refers to"),
    ("deep-flow", "env: " + "[" * 5000 + "]" * 5000 + "\n", 6, f"nests deeper than {MAX_DEPTH} levels"),
    ("deep-block", "env:\n  X:\n    " + "- " * 5000 + "x\n", 8, f"nests deeper than {MAX_DEPTH} levels"),
    ("deep-block-mapping", "env:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 60)), 56,
     f"nests deeper than {MAX_DEPTH} levels"),
    ("alias-deepens", "env: &d " + "[" * 40 + "]" * 40 + "\nsweep: " + "[" * 20 + "*d" + "]" * 20 + "\n", 7,
     f"alias *d nests the spec deeper than {MAX_DEPTH} levels"),
    ("python-tag", "env: !!python/object/apply:os.system [echo pwned]\n", 6,
     "the tag !!python/object/apply:os.system on a list is not accepted"),
    ("python-name", "command: [!!python/name:os.system x]\n", 6, "the tag !!python/name:os.system"),
    ("omap", "sweep: !!omap [{LR: [0.1]}]\n", 6, "the tag !!omap on a list is not accepted"),
    ("binary", "env: {BLOB: !!binary aGVsbG8=}\n", 6, "the tag !!binary on a value is not accepted"),
    ("set", "env: !!set {A, B}\n", 6, "the tag !!set on a mapping is not accepted"),
    ("local-tag", "env: !vault {A: b}\n", 6, "the tag !vault on a mapping is not accepted"),
    ("int-abc", "queue: {max_workers: !!int abc}\n", 6, "'abc' is not a whole number (!!int); quote it"),
    ("timestamp-1h", "limits: {max_runtime: !!timestamp 1h}\n", 6, "the tag !!timestamp on a value is not accepted"),
    ("float-empty", "limits:\n  max_cost: !!float ''\n", 7, "'' is not a number (!!float)"),
    ("bool-maybe", "env: {A: !!bool maybe}\n", 6, "'maybe' is not a boolean (!!bool)"),
    ("int-too-long", f"queue: {{max_workers: {'9' * 5000}}}\n", 6, "is not a whole number"),
    ("complex-key", "? [a, b]\n: 1\n", 6, "has a list or mapping as a mapping key (`? [a, b]`)"),
    ("aliased-mapping-key", "env: &m {A: b}\n*m : 1\n", 7, "has a list or mapping as a mapping key"),
    ("undefined-alias", "env: *nowhere\n", 6, "alias *nowhere has no anchor before it"),
    ("two-documents", "---\nname: other\n", 6, "holds a second YAML document"),
    ("control-character", "env: {A: \"x\"}\n\x07\n", 7, "character #x0007 is not allowed"),
    ("key-with-bracket", '"resources[0]": 1\n', 6, "unknown field 'resources[0]'; did you mean 'resources'?"),
    ("number-key", "1: x\n", 6, "the key 1 is not a field name"),
]


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "job.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# The time bounds below are hang guards (an unbounded parse of these inputs takes minutes or never ends),
# set loose enough for a busy two-core CI machine; speed targets live in bench/.
def _refusal(path: Path) -> tuple[SpecError, float]:
    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load(path)
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_yaml_is_a_spec_error_at_its_line(tmp_path: Path, case: tuple) -> None:
    _, text, line, words = case
    err, elapsed = _refusal(_write(tmp_path, VALID + text))
    assert elapsed < 5.0
    assert [p for p in err.problems if p.line == line and words in p.message], err.render()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_yaml_exits_2_through_the_cli_without_a_traceback(tmp_path: Path, case: tuple) -> None:
    _write(tmp_path, VALID + case[1])
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "job.yaml"), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and f"job.yaml:{case[2]}:" in result.output


def test_an_alias_bomb_is_refused_at_its_first_big_alias_in_milliseconds(tmp_path: Path) -> None:
    # Nine levels of nine: 387 million strings if expanded (the classic "billion laughs").
    err, elapsed = _refusal(_write(tmp_path, VALID + BOMB))
    assert elapsed < 2.0
    assert len(err.problems) == 1 and err.problems[0].message.startswith("alias *d expands")


def test_aliases_within_the_budget_still_work(tmp_path: Path) -> None:
    text = VALID.replace("command: [python", "command: &cmd [python") + "env: &e {A: '1'}\nsweep: {LR: *cmd}\n"
    spec = load(_write(tmp_path, text)).spec
    assert spec.env == {"A": "1"} and spec.sweep == {"LR": ["python", "train.py"]}


def test_merge_keys_merge_and_own_keys_win(tmp_path: Path) -> None:
    text = VALID + ("queue: {<<: {max_workers: 3}}\n"
                    "retries:\n  <<: [{on_failure: 2}, {on_failure: 5, on_interruption: 7}]\n  on_interruption: 1\n")
    spec = load(_write(tmp_path, text)).spec
    assert spec.queue.max_workers == 3
    assert (spec.retries.on_failure, spec.retries.on_interruption) == (2, 1)  # the first listed wins; own keys win


def test_a_problem_inside_a_merged_mapping_points_at_its_line(tmp_path: Path) -> None:
    err, _ = _refusal(_write(tmp_path, VALID + "queue:\n  <<: {max_workers: many}\n"))
    assert [(p.line, p.field) for p in err.problems] == [(7, "queue.max_workers")], err.render()


def test_a_60_mb_file_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    with path.open("wb") as stream:  # sparse: no 60 MB written, and reading it whole would take 60 MB of memory
        stream.write(VALID.encode())
        stream.truncate(60 * 1024 * 1024)
    err, elapsed = _refusal(path)
    assert elapsed < 2.0
    assert err.problems[0].message.startswith(f"is 62,914,560 bytes; a spec may be at most {MAX_SPEC_BYTES:,} bytes")


def test_a_file_at_the_cap_is_read_and_parsed_within_seconds(tmp_path: Path) -> None:
    # The largest file the cap lets through, made of many small values: bounded work, not a hang.
    line = "  K{:06d}: v\n"
    count = (MAX_SPEC_BYTES - len(VALID) - 5) // len(line.format(0))
    path = _write(tmp_path, VALID + "env:\n" + "".join(line.format(i) for i in range(count)))
    assert path.stat().st_size <= MAX_SPEC_BYTES
    started = time.monotonic()
    assert len(load(path).spec.env) == count
    assert time.monotonic() - started < 15.0


def test_thousands_of_problems_are_cut_to_fifty_and_found_fast(tmp_path: Path) -> None:
    # 20,000 unknown keys: each problem's line is a dict lookup, not a scan of the file
    err, elapsed = _refusal(_write(tmp_path, VALID + "".join(f"unknown{i}: 1\n" for i in range(20_000))))
    assert elapsed < 10.0
    assert len(err.problems) == 51 and err.problems[-1].message == "... and 19950 more problems"


def test_thousands_of_secret_looking_env_values_are_cut_too(tmp_path: Path) -> None:
    env = "env:\n" + "".join(f"  TOKEN_{i}: x\n" for i in range(20_000))
    err, elapsed = _refusal(_write(tmp_path, VALID + env))
    assert elapsed < 10.0
    assert len(err.problems) == 51 and err.problems[0].line == 7 and "looks like a secret" in err.problems[0].message


def test_not_utf8_names_the_byte_and_line(tmp_path: Path) -> None:
    err, _ = _refusal(_write(tmp_path, (VALID + "env: {A: café}\n").encode("latin-1")))
    assert (err.problems[0].line, err.problems[0].message) == (
        6, f"is not UTF-8 text: byte 0xe9 at offset {len(VALID) + 12}; save the file as UTF-8")


def test_a_pipe_is_refused_without_waiting_for_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "job.yaml")
    err, elapsed = _refusal(tmp_path / "job.yaml")
    assert elapsed < 2.0 and "not a regular file" in err.problems[0].message


def test_a_path_the_system_cannot_open_is_a_spec_error(tmp_path: Path) -> None:
    err, _ = _refusal(tmp_path / ("a" * 5000))
    assert err.problems[0].message == "cannot be read: File name too long"
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    err, _ = _refusal(tmp_path / "loop.yaml")
    assert err.problems[0].message in {"no such file", "cannot be read: Too many levels of symbolic links"}


def test_unquoted_dates_and_equals_signs_stay_text(tmp_path: Path) -> None:
    spec = load(_write(tmp_path, VALID + "env: {START: 2024-01-01, WHEN: 2024-01-01T10:00:00Z, OP: =}\n")).spec
    assert spec.env == {"START": "2024-01-01", "WHEN": "2024-01-01T10:00:00Z", "OP": "="}


def test_the_standard_tags_still_construct(tmp_path: Path) -> None:
    text = VALID + "env: !!map {A: !!str 1, B: !!int '2', C: !!float 0.5, D: !!bool yes, E: !!null ''}\n"
    with pytest.raises(SpecError) as caught:  # E is null: a value the env model refuses, but constructed fine
        load(_write(tmp_path, text))
    assert "E: expected a string or number, got NoneType" in caught.value.render()
    spec = load(_write(tmp_path, text.replace(", E: !!null ''", ""))).spec
    assert spec.env == {"A": "1", "B": "2", "C": "0.5", "D": "true"}


def test_control_characters_in_keys_are_shown_escaped(tmp_path: Path) -> None:
    # A terminal escape in a key must not reach the terminal raw (it could recolour or rewrite the output).
    err, _ = _refusal(_write(tmp_path, VALID + '"x\\e[2J": 1\n"x\\e[2J": 2\nenv: {"A\\e[31m": b}\n'))
    rendered = err.render()
    assert "\x1b" not in rendered
    assert "job.yaml:7: 'x\\x1b[2J': is given twice" in rendered
    assert "unknown field 'x\\x1b[2J'" in rendered and "env: 'A\\x1b[31m' is not a valid variable name" in rendered


def test_an_ordinary_spec_loads(tmp_path: Path) -> None:
    spec = load(_write(tmp_path, VALID + "env: {EPOCHS: '6'}\nsweep: {LR: [0.1, 0.01]}\n")).spec
    assert (spec.name, spec.env, spec.sweep) == ("exp1", {"EPOCHS": "6"}, {"LR": ["0.1", "0.01"]})


@pytest.mark.parametrize("parser", [yaml.SafeLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader)],
                         ids=["python-parser", "libyaml-parser"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] not in {"key-with-bracket", "number-key"}],
                         ids=[c[0] for c in CASES if c[0] not in {"key-with-bracket", "number-key"}])
def test_both_parsers_refuse_the_same_way(parser: type, case: tuple) -> None:
    """PyYAML without libyaml parses with its Python parser: the bounds hold there too."""
    _, text, line, words = case
    with pytest.raises(SpecError) as caught:
        node, problems = compose(VALID + text, "job.yaml", parser=parser)
        assert node is not None
        _, problems = construct(node, "job.yaml")
        raise SpecError(problems)
    assert [p for p in caught.value.problems if p.line == line and words in p.message], caught.value.render()
