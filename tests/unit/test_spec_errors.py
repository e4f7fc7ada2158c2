"""Malformed specs: each exits 2 through the real CLI, naming file, line, field and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from cli_run import invoke

VALID = """\
name: exp1
command: [python, train.py]
resources:
  instance_types: [c5.large]
  max_price: 0.1
"""

# (id, spec text, expected line, expected field path, expected words in the message)
CASES = [
    ("bad-name", "name: Exp_1\ncommand: [python]\nresources: {instance_types: [c5.large]}\n",
     1, "name", "expected 1 to 40 characters of a-z, 0-9 and '-', starting with a letter or digit, got 'Exp_1'"),
    ("name-too-long", f"name: {'a' * 41}\ncommand: [python]\nresources: {{instance_types: [c5.large]}}\n",
     1, "name", "expected 1 to 40 characters"),
    ("missing-name", "command: [python]\nresources: {instance_types: [c5.large]}\n",
     1, "name", "required field is missing"),
    ("missing-command", "name: a\nresources: {instance_types: [c5.large]}\n",
     1, "command", "required field is missing"),
    ("empty-command", "name: a\ncommand: []\nresources: {instance_types: [c5.large]}\n",
     2, "command", "expected a list of strings (exec form)"),
    ("unknown-top-field", VALID + "comand: [x]\n",
     6, "comand", "unknown field 'comand'; did you mean 'command'?"),
    ("unknown-nested-field", "name: a\ncommand: [python]\nresources:\n  instance_type: [c5.large]\n",
     4, "resources.instance_type", "unknown field 'instance_type'; did you mean 'instance_types'?"),
    ("price-not-number", VALID.replace("max_price: 0.1", "max_price: cheap"),
     5, "resources.max_price", "expected a number, got 'cheap'"),
    ("price-negative", VALID.replace("max_price: 0.1", "max_price: -1"),
     5, "resources.max_price", "greater than 0"),
    ("bad-instance-type", VALID.replace("[c5.large]", "[c5large]"),
     4, "resources.instance_types", "'c5large' is not an EC2 instance type"),
    ("arm64-instance-type", VALID.replace("[c5.large]", "[c5.large, c7gn.xlarge]"),
     4, "resources.instance_types", "c7gn.xlarge is an arm64 (Graviton) type; submitter runs x86_64 images"),
    ("no-instance-types", VALID.replace("[c5.large]", "[]"),
     4, "resources.instance_types", "expected at least one item"),
    ("bad-gpus", VALID + "  gpus: many\n",
     6, "resources.gpus", "expected 'auto' or a whole number of GPUs"),
    ("bad-region", VALID + "  region: useast1\n",
     6, "resources.region", "'useast1' is not an AWS region"),
    ("volume-too-small", VALID + "  volume_gb: 0\n",
     6, "resources.volume_gb", "greater than or equal to 1"),
    ("bad-duration", VALID + "limits:\n  max_runtime: 4 hours\n",
     7, "limits.max_runtime", "expected a duration like 4h, 90m or 1h30m, got '4 hours'"),
    ("duration-too-short", VALID + "limits:\n  max_runtime: 10s\n",
     7, "limits.max_runtime", "must be between 1m and 14d"),
    ("grace-too-long", VALID + "limits:\n  stop_grace: 1h\n",
     7, "limits.stop_grace", "must be between 5s and 15m, got '1h'"),
    ("secret-values", VALID + "secrets: {WANDB_API_KEY: abc123}\n",
     6, "secrets", "lists secret names only"),
    ("secret-in-env", VALID + "env:\n  WANDB_API_KEY: abc123\n",
     7, "env.WANDB_API_KEY", "looks like a secret value; list its name under `secrets:`"),
    ("aws-key-in-build-args", VALID + "image:\n  build_args: {KEYID: AKIAABCDEFGHIJKLMNOP}\n",
     7, "image.build_args.KEYID", "looks like a secret value"),
    ("empty-sweep-values", VALID + "sweep:\n  LR: []\n",
     6, "sweep", "LR: expected a non-empty list of values"),
    ("sweep-env-clash", VALID + "env: {LR: '0.1'}\nsweep:\n  LR: [0.1, 0.2]\n",
     1, "", "LR is set in both env and sweep"),
    ("relative-outputs", VALID + "outputs: outputs\n",
     6, "outputs", "expected an absolute container path"),
    ("input-target-outside-volume", VALID + "inputs:\n  - {source: data, target: /elsewhere}\n",
     7, "inputs.0.target", "is not under volume_mount '/data'"),
    ("input-source-missing", VALID + "inputs:\n  - {source: ./nope, target: /data/x}\n",
     7, "inputs.0.source", "no file or directory at"),
    ("bad-s3-source", VALID + "inputs:\n  - {source: 's3://Bad_Bucket/x', target: /data/x}\n",
     7, "inputs.0.source", "is not an S3 URI"),
    ("dockerfile-missing", VALID + "image:\n  dockerfile: ../nope/Dockerfile\n",
     7, "image.dockerfile", "no file at"),
    ("uri-and-dockerfile",
     VALID + "image:\n  uri: 1.dkr.ecr.us-east-1.amazonaws.com/r@sha256:" + "ab" * 32 + "\n  dockerfile: D\n",
     6, "image", "give either uri (a prebuilt image) or dockerfile/context/build_args, not both"),
    ("workers-zero", VALID + "queue: {max_workers: 0}\n",
     6, "queue.max_workers", "greater than or equal to 1"),
    ("duplicate-key", VALID + "name: again\n",
     6, "name", "is given twice"),
    ("not-a-mapping", "- just\n- a list\n", 1, "", "expected a mapping of fields"),
    ("yaml-syntax", "name: [unclosed\ncommand: x\n", 2, "", "not valid YAML"),
    ("empty-file", "", None, "", "the file is empty"),
]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile.train").write_text("FROM scratch\n")
    (tmp_path / "data").mkdir()
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_exits_2_naming_file_line_field(project: Path, case: tuple) -> None:
    _, text, line, field, words = case
    spec = project / "job.yaml"
    spec.write_text(text)
    code, output = invoke(["submit", "job.yaml", "--dry-run"], project)
    assert code == 2, output
    assert "Traceback" not in output
    location = f"job.yaml:{line}:" if line else "job.yaml:"
    expected = f"{location} {field}: " if field else location
    matching = [row for row in output.splitlines() if row.startswith(("error: " + expected, expected))]
    assert matching, f"no line starting with {expected!r} in:\n{output}"
    assert any(words in row for row in matching), f"{words!r} not in {matching}"
    assert "next: fix the fields above" in output


def test_all_problems_of_a_file_are_reported_at_once(project: Path) -> None:
    (project / "job.yaml").write_text(textwrap.dedent("""\
        name: Bad Name
        command: [python]
        resources:
          instance_types: [c5.large]
          max_price: cheap
        limits: {max_runtime: forever}
    """))
    code, output = invoke(["submit", "job.yaml", "--dry-run"], project)
    assert code == 2
    for expected in ("job.yaml:1: name:", "job.yaml:5: resources.max_price:", "job.yaml:6: limits.max_runtime:"):
        assert expected in output


def test_problems_of_several_files_are_reported_together(project: Path) -> None:
    (project / "a.yaml").write_text(VALID.replace("exp1", "A"))
    (project / "b.yaml").write_text(VALID.replace("0.1", "x"))
    code, output = invoke(["submit", "a.yaml", "b.yaml", "--dry-run"], project)
    assert code == 2
    assert "a.yaml:1: name:" in output and "b.yaml:5: resources.max_price:" in output


def test_two_specs_with_one_name_are_refused(project: Path) -> None:
    (project / "a.yaml").write_text(VALID)
    (project / "b.yaml").write_text(VALID)
    code, output = invoke(["submit", "a.yaml", "b.yaml", "--dry-run"], project)
    assert code == 2
    assert "'exp1' is also the name of a.yaml" in output


def test_missing_spec_file(project: Path) -> None:
    code, output = invoke(["submit", "nope.yaml", "--dry-run"], project)
    assert code == 2
    assert "nope.yaml: no such file" in output


def test_debug_shows_the_traceback(project: Path) -> None:
    (project / "job.yaml").write_text("name: BAD\n")
    code, output = invoke(["--debug", "submit", "job.yaml", "--dry-run"], project)
    assert code == 2
    assert "Traceback" in output
