"""Hostile paths, references, names and numbers in a spec: each refused at load with its field, line and next
step, through the real loader and the real CLI; ordinary specs still load."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest
from cli_run import invoke

from submitter.errors import SpecError
from submitter.spec import load

REPO = Path(__file__).resolve().parents[2]
HEX = "0123456789abcdef" * 4
VALID = """\
name: exp1
command: [python, train.py]
resources:
  instance_types: [c5.large]
  max_price: 0.1
"""


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project of its own (no git work tree above it), with a home directory that is not an ancestor."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    root = tmp_path / "proj"
    root.mkdir()
    (root / "Dockerfile.train").write_text("FROM scratch\n")
    (root / "data").mkdir()
    (root / "data" / "train.csv").write_text("x\n")
    return root


def _problems(spec: Path, text: str) -> list[tuple[int | None, str, str]]:
    spec.write_text(text)
    with pytest.raises(SpecError) as caught:
        load(spec)
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def _refused(spec: Path, text: str, field: str, words: str, line: int | None = None) -> str:
    problems = _problems(spec, text)
    hits = [p for p in problems if p[1] == field and words in p[2]]
    assert hits, f"no problem at {field!r} saying {words!r} in {problems}"
    if line is not None:
        assert hits[0][0] == line, problems
    return hits[0][2]


# (id, spec text after VALID, field, line, words in the message)
CONTAINER_PATHS = [
    ("target-dotdot", "inputs:\n  - {source: ./data, target: /data/../etc/cron.d/x}\n",
     "inputs.0.target", 7, "has a '..' segment"),
    ("mount-dotdot", "volume_mount: /data/../etc\n", "volume_mount", 6, "has a '..' segment"),
    ("outputs-proc", "outputs: /proc/self\n", "outputs", 6, "is under the system directory /proc"),
    ("outputs-colon", "outputs: '/out:/host'\n", "outputs", 6, "holds ':' or ','"),
    ("outputs-comma", "outputs: '/out,readonly'\n", "outputs", 6, "holds ':' or ','"),
    ("checkpoints-etc", "checkpoints: /etc\n", "checkpoints", 6, "is a system directory"),
    ("cron-target", "volume_mount: /etc/cron.d\n", "volume_mount", 6, "is under the system directory /etc"),
    ("mount-root", "volume_mount: /\n", "volume_mount", 6, "is a system directory"),
    ("mount-usr-lib", "volume_mount: /usr/lib/x\n", "volume_mount", 6, "under the system directory /usr"),
    ("outputs-newline", 'outputs: "/out\\n/etc"\n', "outputs", 6, "control character or line break"),
    ("outputs-nul", 'outputs: "/out\\0"\n', "outputs", 6, "control character"),
    ("target-line-separator", 'inputs:\n  - {source: ./data, target: "/data/a\\Lb"}\n', "inputs.0.target", 7,
     "control character or line break"),
    ("outputs-long", f"outputs: /{'a' * 300}\n", "outputs", 6, "at most 255"),
    ("outputs-relative", "outputs: out\n", "outputs", 6, "expected an absolute container path"),
    ("outputs-in-mount", "outputs: /data/out\n", "outputs", 6, "lie inside one another"),
    ("mount-in-outputs", "volume_mount: /outputs/data\n", "outputs", None, "lie inside one another"),
    ("checkpoints-is-outputs", "checkpoints: /outputs/\n", "checkpoints", 6, "is the same directory as outputs"),
    ("checkpoints-in-outputs", "checkpoints: /outputs/ckpt\n", "checkpoints", 6, "lie inside one another"),
    ("target-outside-mount", "inputs:\n  - {source: ./data, target: /elsewhere}\n",
     "inputs.0.target", 7, "is not under volume_mount"),
]


@pytest.mark.parametrize("case", CONTAINER_PATHS, ids=[c[0] for c in CONTAINER_PATHS])
def test_container_paths_are_refused_with_the_field(project: Path, case: tuple) -> None:
    _, body, field, line, words = case
    message = _refused(project / "job.yaml", VALID + body, field, words, line)
    assert "like /" in message or "volume_mount" in message  # every message shows a path that would do


def test_container_paths_are_normalised(project: Path) -> None:
    (project / "job.yaml").write_text(VALID + "outputs: /out//x/./\ncheckpoints: /ckpt/\ninputs:\n"
                                      "  - {source: ./data, target: /data/./train/}\n")
    spec = load(project / "job.yaml").spec
    assert (spec.outputs, spec.checkpoints, spec.inputs[0].target) == ("/out/x", "/ckpt", "/data/train")


def test_a_source_that_is_a_link_out_of_the_project_names_the_link(project: Path) -> None:
    (project / "etc-link").symlink_to("/etc")
    message = _refused(project / "job.yaml", VALID + "inputs:\n  - {source: etc-link/passwd, target: /data/p}\n",
                       "inputs.0.source", "is a symbolic link to /etc, outside the project directory", 7)
    assert f"{project / 'etc-link'} is a symbolic link" in message
    assert "s3://" in message  # the next step


def test_a_link_to_root_s_home_is_refused_before_it_is_read(project: Path) -> None:
    (project / "data" / "home").symlink_to("/root")
    message = _refused(project / "job.yaml", VALID + "inputs:\n  - {source: data/home/.ssh, target: /data/k}\n",
                       "inputs.0.source", "symbolic link to /root")
    assert str(project / "data" / "home") in message


@pytest.mark.parametrize("source", ["../outside", "/etc/passwd", "data/../../outside"])
def test_a_source_outside_the_project_is_refused(project: Path, source: str) -> None:
    (project.parent / "outside").mkdir()
    _refused(project / "job.yaml", VALID + f"inputs:\n  - {{source: '{source}', target: /data/x}}\n",
             "inputs.0.source", f"outside the project directory {project}")


def test_a_link_inside_an_input_directory_that_leads_out_is_named(project: Path) -> None:
    (project / "data" / "sub").mkdir()
    (project / "data" / "sub" / "passwd").symlink_to("/etc/passwd")
    message = _refused(project / "job.yaml", VALID + "inputs:\n  - {source: ./data, target: /data/x}\n",
                       "inputs.0.source", "(in this input) is a symbolic link to /etc/passwd")
    assert str(project / "data" / "sub" / "passwd") in message


def test_links_that_stay_inside_the_project_are_fine(project: Path) -> None:
    (project / "data" / "again.csv").symlink_to(project / "data" / "train.csv")
    (project / "alias").symlink_to(project / "data")
    (project / "job.yaml").write_text(VALID + "inputs:\n  - {source: alias, target: /data/x}\n")
    assert load(project / "job.yaml").local_inputs["alias"] == project / "data"


def test_special_files_are_refused_as_sources(project: Path) -> None:
    os.mkfifo(project / "pipe")
    _refused(project / "job.yaml", VALID + "inputs:\n  - {source: pipe, target: /data/p}\n",
             "inputs.0.source", "is a named pipe (fifo), not a file or directory")
    os.mkfifo(project / "data" / "pipe")
    _refused(project / "job.yaml", VALID + "inputs:\n  - {source: data, target: /data/p}\n",
             "inputs.0.source", "(in this input) is a named pipe (fifo)")


def test_a_socket_and_a_device_are_refused(project: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(project / "sock"))
        _refused(project / "job.yaml", VALID + "inputs:\n  - {source: sock, target: /data/s}\n",
                 "inputs.0.source", "is a socket")
    finally:
        server.close()
    (project / "zero").symlink_to("/dev/zero")  # a link out: refused as such, before its kind matters
    _refused(project / "job.yaml", VALID + "inputs:\n  - {source: zero, target: /data/z}\n",
             "inputs.0.source", "symbolic link to /dev/zero")


def test_a_loop_of_links_is_a_spec_error(project: Path) -> None:
    (project / "a").symlink_to(project / "b")
    (project / "b").symlink_to(project / "a")
    _refused(project / "job.yaml", VALID + "inputs:\n  - {source: a, target: /data/a}\n",
             "inputs.0.source", "")
    _refused(project / "job.yaml", VALID + "image: {dockerfile: a}\n", "image.dockerfile", "loop of symbolic links")


def _git_project(project: Path) -> Path:
    """project/jobs/x.yaml whose build context project/docker does not hold the spec; data in project/shared."""
    (project / "docker").mkdir()
    (project / "docker" / "Dockerfile").write_text("FROM scratch\n")
    (project / "shared").mkdir()
    (project / "jobs").mkdir()
    spec = project / "jobs" / "x.yaml"
    spec.write_text(VALID + "image: {dockerfile: ../docker/Dockerfile}\n"
                            "inputs:\n  - {source: ../shared, target: /data/s}\n")
    return spec


def test_the_project_directory_is_the_git_work_tree_holding_the_spec(project: Path) -> None:
    spec = _git_project(project)
    (project / ".git").mkdir()
    assert load(spec).local_inputs["../shared"] == project / "shared"


def test_without_git_the_project_directory_is_the_spec_s_directory(project: Path) -> None:
    spec = _git_project(project)
    message = _refused(spec, spec.read_text(), "inputs.0.source", "outside the project directory")
    assert f"project directory {project / 'jobs'} " in message


def test_without_git_a_context_holding_the_spec_is_the_project_directory(project: Path) -> None:
    (project / "jobs").mkdir()
    spec = project / "jobs" / "x.yaml"
    spec.write_text(VALID + "inputs:\n  - {source: ../data, target: /data/s}\n")  # Dockerfile.train found above
    assert load(spec).context == project
    assert load(spec).local_inputs["../data"] == project / "data"


def test_a_git_work_tree_at_home_is_no_project(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".git").mkdir()
    (home / "p").mkdir()
    (home / "p" / "Dockerfile.train").write_text("FROM scratch\n")
    (home / ".aws").mkdir()
    spec = home / "p" / "job.yaml"
    _refused(spec, VALID + "inputs:\n  - {source: ../.aws, target: /data/a}\n", "inputs.0.source",
             f"outside the project directory {home / 'p'}")


# (id, spec text after VALID, field, words in the message, the next step it names)
BUILDS = [
    ("passwd-from-root", "image: {dockerfile: /etc/passwd, context: /}\n", "image.context", "the whole filesystem",
     "Set image.context"),
    ("context-etc", "image: {dockerfile: /etc/passwd}\n", "image.dockerfile", "is a system directory",
     "Set image.context"),
    ("context-usr", "image: {dockerfile: Dockerfile.train, context: /usr}\n", "image.context",
     "is a system directory", "Set image.context"),
    ("dockerfile-outside", "image: {dockerfile: Dockerfile.train, context: ./data}\n", "image.dockerfile",
     "is outside the build context", "set image.context to a directory that holds both"),
    ("dockerfile-nul", 'image: {dockerfile: "Docker\\0file"}\n', "image.dockerfile", "control character",
     "write a plain path"),
    ("context-newline", 'image: {context: "..\\n"}\n', "image.context", "line break", "write a plain path"),
]


@pytest.mark.parametrize("case", BUILDS, ids=[c[0] for c in BUILDS])
def test_build_paths_are_refused(project: Path, case: tuple) -> None:
    _, body, field, words, next_step = case
    assert next_step in _refused(project / "job.yaml", VALID + body, field, words, 6)


def test_the_home_directory_is_no_build_context(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "Dockerfile.train").write_text("FROM scratch\n")
    (home / "job.yaml").write_text(VALID)  # the Dockerfile found next to it: the context is home
    _refused(home / "job.yaml", VALID, "image.dockerfile", "is your home directory")
    _refused(project / "job.yaml", VALID + f"image: {{dockerfile: {home}/Dockerfile.train, context: {tmp_path}}}\n",
             "image.context", "a directory holding your home directory")


URIS = [
    ("--privileged/x", "starts with '-'"),
    ("-v/etc:/x", "starts with '-'"),
    ("registry.io/Team/Train:1", "lowercase path"),
    ("registry.io/train@sha256:abc", "is not an image reference"),
    ("registry.io/train:v 1", "holds a space"),
    ("registry.io/tr\x1bain:v1", "holds a space or control character"),
    ("registry.io//train", "is not an image reference"),
    ("registry.io/train:" + "t" * 200, "is not an image reference"),
    ("train", "is not an image reference"),
    ("registry.io/" + "a" * 600, "characters long"),
]


@pytest.mark.parametrize("uri,words", URIS, ids=[u[:20] for u, _ in URIS])
def test_image_uris_must_be_docker_references(project: Path, uri: str, words: str) -> None:
    _refused(project / "job.yaml", VALID + f"image:\n  uri: {json.dumps(uri)}\n", "image.uri", words, 7)


@pytest.mark.parametrize("uri", [
    f"123456789012.dkr.ecr.us-east-1.amazonaws.com/train@sha256:{HEX}",
    "localhost:5000/team/train:v1.2-rc_3",
    f"ghcr.io/org/sub/img:1.0@sha256:{HEX}",
    "[::1]:5000/train",
    "team/train",
])
def test_ordinary_image_uris_load(project: Path, uri: str) -> None:
    (project / "job.yaml").write_text(VALID + f"image:\n  uri: {json.dumps(uri)}\n")
    assert load(project / "job.yaml").spec.image.uri == uri


NUMBERS = [
    ("cost-inf", "limits: {max_cost: .inf}\n", "limits.max_cost", "finite"),
    ("cost-nan", "limits: {max_cost: .nan}\n", "limits.max_cost", "finite"),
    ("cost-inf-text", "limits: {max_cost: inf}\n", "limits.max_cost", "finite"),
    ("cost-overflow", "limits: {max_cost: 1.0e+400}\n", "limits.max_cost", "finite"),
    ("runtime-inf", "limits: {max_runtime: .inf}\n", "limits.max_runtime", "not a finite number"),
    ("grace-nan", "limits: {stop_grace: .nan}\n", "limits.stop_grace", "not a finite number"),
    ("sweep-nan", "sweep: {LR: [0.1, .nan]}\n", "sweep", "LR: nan is not a finite number"),
    ("env-inf", "env: {X: -.inf}\n", "env", "X: -inf is not a finite number"),
]


@pytest.mark.parametrize("case", NUMBERS, ids=[c[0] for c in NUMBERS])
def test_numbers_must_be_finite(project: Path, case: tuple) -> None:
    _, body, field, words = case
    _refused(project / "job.yaml", VALID + body, field, words)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "inf", "NaN"])
def test_a_price_must_be_finite(project: Path, value: str) -> None:
    _refused(project / "job.yaml", VALID.replace("max_price: 0.1", f"max_price: {value}"),
             "resources.max_price", "expected a finite number", 5)


@pytest.mark.parametrize("name", ["-x", "--help", "-"])
def test_a_name_starts_with_a_letter_or_digit(project: Path, name: str) -> None:
    _refused(project / "job.yaml", VALID.replace("name: exp1", f"name: '{name}'"), "name",
             "starting with a letter or digit", 1)


def test_names_may_still_hold_and_end_with_a_dash(project: Path) -> None:
    (project / "job.yaml").write_text(VALID.replace("name: exp1", "name: 0-exp-"))
    assert load(project / "job.yaml").spec.name == "0-exp-"


def test_submit_dry_run_refuses_every_trick_at_once_with_exit_2(project: Path) -> None:
    (project / "etc-link").symlink_to("/etc")
    (project / "job.yaml").write_text("name: '-x'\n" + VALID.split("\n", 1)[1] + (
        "image: {dockerfile: /etc/passwd, context: /}\n"
        "volume_mount: /data/../etc\n"
        "outputs: /proc/self\n"
        "inputs:\n  - {source: etc-link, target: /data/e}\n"
        "limits: {max_cost: .inf}\n"))
    code, output = invoke(["submit", "job.yaml", "--dry-run"], project)
    assert code == 2, output
    assert "Traceback" not in output
    for where in ("job.yaml:1: name:", "job.yaml:7: volume_mount:", "job.yaml:8: outputs:",
                  "job.yaml:11: limits.max_cost:"):
        assert where in output, output
    assert "next: fix the fields above" in output
    # Path problems come once the fields validate: the same spec with those fixed shows them.
    (project / "job.yaml").write_text(VALID + "image: {dockerfile: /etc/passwd, context: /}\n"
                                      "inputs:\n  - {source: etc-link, target: /data/e}\n")
    code, output = invoke(["submit", "job.yaml", "--dry-run"], project)
    assert code == 2 and "Traceback" not in output, output
    assert "job.yaml:6: image.context: the build context is / , the whole filesystem" in output
    assert re.search(r"job.yaml:8: inputs.0.source: \S*etc-link is a symbolic link to /etc", output), output


def test_the_repository_s_specs_and_the_readme_example_still_load(tmp_path: Path) -> None:
    for spec in sorted((REPO / "jobs").glob("*.yaml")):
        assert load(spec).spec.name == spec.stem
    readme = (REPO / "README.md").read_text()
    example = readme.split("## Job spec", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / ".git").mkdir()
    (tmp_path / "Dockerfile.train").write_text("FROM scratch\n")
    (tmp_path / "jobs" / "data" / "train").mkdir(parents=True)
    (tmp_path / "jobs" / "exp1.yaml").write_text(example)
    loaded = load(tmp_path / "jobs" / "exp1.yaml")
    assert loaded.context == tmp_path and loaded.spec.outputs == "/outputs"


@pytest.mark.parametrize("body,field", [
    (f"inputs:\n  - {{source: {'a' * 300}, target: /data/a}}\n", "inputs.0.source"),
    (f"image: {{dockerfile: {'a' * 300}}}\n", "image"),
    (f"image: {{context: {'a' * 300}/x}}\n", "image"),
])
def test_a_path_the_system_cannot_look_up_is_a_spec_error(project: Path, body: str, field: str) -> None:
    _refused(project / "job.yaml", VALID + body, field, "File name too long")
