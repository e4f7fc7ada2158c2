"""SUBMITTER_PREFIX reaches S3 keys, IAM ARNs and the boot script: only plain path segments are accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from submitter import settings
from submitter.cli import app
from submitter.errors import SettingsError


@pytest.mark.parametrize("raw, expected", [
    ("submitter", "submitter"),
    ("team/alice", "team/alice"),
    ("/team/alice/", "team/alice"),  # outer slashes are dropped, as before
    ("a.b_c-D9", "a.b_c-D9"),
    ("x" * settings.PREFIX_MAX, "x" * settings.PREFIX_MAX),
])
def test_plain_prefixes_are_kept(tmp_path: Path, raw: str, expected: str) -> None:
    assert settings.load({"SUBMITTER_PREFIX": raw}, tmp_path).prefix == expected


def test_unset_prefix_is_the_default(tmp_path: Path) -> None:
    assert settings.load({}, tmp_path).prefix == "submitter"


@pytest.mark.parametrize("raw, words", [
    ("team'x", '"team\'x"'),
    ('a"b', "a\"b"),
    ("runs*", "'runs*'"),
    ("a?b", "'a?b'"),
    ("a\nb", "'a\\nb'"),
    ("a b", "'a b'"),
    ("a/../b", "'..', which is . or .."),
    ("a/./b", "'.', which is . or .."),
    ("a//b", "empty segment"),
    ("///", "empty segment"),
    ("${aws:username}", "'${aws:username}'"),
    ("x" * (settings.PREFIX_MAX + 1), f"longer than {settings.PREFIX_MAX} characters"),
])
def test_unsafe_prefixes_are_refused_naming_the_problem(tmp_path: Path, raw: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings.load({"SUBMITTER_PREFIX": raw}, tmp_path)
    error = caught.value
    assert error.where == "SUBMITTER_PREFIX"
    assert words in error.what
    assert error.next_step and "letters, digits, . _ -" in error.next_step


def test_prefix_from_dotenv_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SUBMITTER_PREFIX='a*'\n")
    with pytest.raises(SettingsError, match="SUBMITTER_PREFIX"):
        settings.load({}, tmp_path)


def test_cli_refuses_a_bad_prefix_with_exit_2_before_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text("name: exp1\ncommand: [python]\nresources: {instance_types: [c5.large]}\n")
    result = CliRunner().invoke(app, ["submit", "job.yaml", "--dry-run"], env={"SUBMITTER_PREFIX": "runs/*"})
    assert result.exit_code == 2, result.output
    assert "SUBMITTER_PREFIX: 'runs/*' has the segment '*'" in result.output
    assert "next: use segments of letters" in result.output
    assert "Traceback" not in result.output
