"""Property: whatever a spec file holds, loading it either succeeds or raises SpecError (exit 2 with file:line),
never another exception, and within a second. Random text and bytes, YAML token soup, and generated documents
with random keys, values, tags, anchors and aliases around the spec's real fields."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from submitter.errors import SpecError
from submitter.spec import load

# No example database: the suite runs in a shared checkout; a failure prints its input for a regression test.
FUZZ = settings(max_examples=300, deadline=1000, database=None, suppress_health_check=[HealthCheck.too_slow])

FIELDS = ["name", "image", "uri", "dockerfile", "context", "build_args", "command", "env", "secrets", "resources",
          "instance_types", "max_price", "region", "volume_gb", "gpus", "backend", "volume_mount", "inputs",
          "source", "target", "outputs", "checkpoints", "limits", "max_runtime", "max_cost", "stop_grace", "sweep",
          "queue", "max_workers", "retries", "on_interruption", "on_failure", "permissions", "s3_read", "s3_write"]
TAGS = ["!!str", "!!int", "!!float", "!!bool", "!!null", "!!seq", "!!map", "!!binary", "!!timestamp", "!!omap",
        "!!set", "!!pairs", "!!merge", "!!value", "!!python/object/apply:os.system", "!!python/name:os.system",
        "!foo", "!", "!<tag:yaml.org,2002:str>"]
SCALARS = ["exp1", "c5.large", "python", "/data", "/data/../etc", "4h", "0.1", "-1", ".inf", ".nan", "1e999",
           "0x1F", "0o17", "0b101", "1:30", "1_000", "2024-01-01", "2024-01-01T00:00:00Z", "yes", "off", "~",
           "null", "=", "<<", "''", '""', "'a''b'", '"\\x00"', '"\\ud800"', "s3://b/p/", "9" * 5000, "x" * 300,
           "resources[0]", "a.b", "-x", "--privileged/x"]
TOKENS = ["\n", "  ", "- ", ": ", ":", "[", "]", "{", "}", ", ", "? ", "&a ", "*a", "&b ", "*b", "<<: ", "---\n",
          "...\n", "'", '"', "# c", "|\n", ">\n", "\t", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\\", "\ufeff",
          *TAGS, *SCALARS, *(f + ":" for f in FIELDS)]


def _scalar() -> st.SearchStrategy[str]:
    plain = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).map(lambda t: '"' + t.encode(
        "unicode_escape").decode("ascii").replace('"', '\\"') + '"')
    return st.one_of(st.sampled_from(SCALARS), st.integers().map(str), st.floats().map(repr), plain)


def _decorated(node: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A node with, sometimes, a tag and an anchor in front of it, or an alias instead of it."""
    tag = st.one_of(st.just(""), st.sampled_from(TAGS).map(lambda t: t + " "))
    anchor = st.one_of(st.just(""), st.sampled_from(["&a ", "&b ", "&c "]))
    alias = st.sampled_from(["*a", "*b", "*c"])
    return st.one_of(st.tuples(tag, anchor, node).map("".join), alias)


def _key() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(FIELDS), st.sampled_from(SCALARS), st.just("<<"), st.just("? [a, b]"))


NODES = st.recursive(
    _decorated(_scalar()),
    lambda inner: _decorated(st.one_of(
        st.lists(inner, max_size=5).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(_key(), inner), max_size=5).map(
            lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"),
    )),
    max_leaves=30,
)
DOCUMENTS = st.lists(st.tuples(_key(), NODES), max_size=12).map(
    lambda pairs: "".join(f"{k}: {v}\n" for k, v in pairs))
BASE = ("name: exp1\ncommand: [python, train.py]\nimage: {uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/"
        f"train@sha256:{'a' * 64}}}\nresources:\n  instance_types: [c5.large]\n")

# Every field with a valid value, each of which a property may swap for a generated node: reaches the models'
# validators with one odd value among sound ones.
VALID = {"name": "exp1", "command": "[python, train.py]", "resources": "{instance_types: [c5.large], max_price: 0.1}",
         "image": f"{{uri: '123456789012.dkr.ecr.us-east-1.amazonaws.com/train@sha256:{'a' * 64}'}}",
         "env": "{EPOCHS: '6'}", "secrets": "[WANDB_API_KEY]", "volume_mount": "/data",
         "inputs": "[{source: 's3://my-bucket/datasets/', target: /data/mnist}]", "outputs": "/outputs",
         "checkpoints": "/checkpoints", "limits": "{max_runtime: 4h, max_cost: 5, stop_grace: 90s}",
         "sweep": "{LR: [0.1, 0.01]}", "queue": "{max_workers: 2}", "retries": "{on_interruption: 3, on_failure: 0}",
         "permissions": "{s3_read: ['s3://my-datasets/imagenet/']}"}
MUTATED = st.fixed_dictionaries({k: st.one_of(st.just(v), st.just(v), NODES) for k, v in VALID.items()}).map(
    lambda fields: "".join(f"{k}: {v}\n" for k, v in fields.items()))


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "job.yaml"


def _loads_or_refuses(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    started = time.monotonic()
    try:
        load(path)
    except SpecError as err:
        assert err.problems and all(p.file == str(path) for p in err.problems)
        assert err.exit_code == 2 and err.render()
    assert time.monotonic() - started < 1.0


@FUZZ
@given(st.one_of(st.text(max_size=400).map(str.encode), st.binary(max_size=400)))
def test_any_text_or_bytes(spec_file: Path, data: bytes) -> None:
    _loads_or_refuses(spec_file, data)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_yaml_token_soup(spec_file: Path, text: str) -> None:
    _loads_or_refuses(spec_file, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(DOCUMENTS, st.booleans())
def test_generated_documents_around_a_valid_spec(spec_file: Path, text: str, with_base: bool) -> None:
    _loads_or_refuses(spec_file, ((BASE if with_base else "") + text).encode("utf-8", "surrogatepass"))


@FUZZ
@given(MUTATED)
def test_valid_spec_with_fields_swapped_for_generated_nodes(spec_file: Path, text: str) -> None:
    _loads_or_refuses(spec_file, text.encode("utf-8", "surrogatepass"))


def test_the_base_spec_loads(spec_file: Path) -> None:
    """The generated documents start from a spec that loads, so the properties reach validation, not only YAML."""
    spec_file.write_text(BASE)
    assert load(spec_file).spec.name == "exp1"
    spec_file.write_text("".join(f"{k}: {v}\n" for k, v in VALID.items()))
    assert load(spec_file).spec.sweep == {"LR": ["0.1", "0.01"]}
