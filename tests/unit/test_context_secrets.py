"""Secret-looking files in the build context are refused before anything is built, unless .dockerignore'd."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from submitter.cli import app
from submitter.context import looks_secret, refuse_secret_files
from submitter.errors import UsageError

SPEC = "name: exp1\ncommand: [python, train.py]\nresources: {instance_types: [c5.large], max_price: 0.1}\n"


@pytest.mark.parametrize("rel", [
    ".env", "config/.env", ".env.local", ".env.production", ".ENV",
    "server.pem", "certs/tls.key", "client.p12", "store.pfx",
    "id_rsa", "keys/id_ed25519", "id_ecdsa_work",
    ".aws/credentials", "home/.aws/credentials", ".docker/config.json",
    ".netrc", "_netrc", ".pgpass", ".pypirc", ".git-credentials",
])
def test_secret_looking_names(rel: str) -> None:
    assert looks_secret(rel)


@pytest.mark.parametrize("rel", [
    "train.py", "Dockerfile.train", ".env.example", ".env.sample", "environment.yml", "id_rsa.pub",
    "keys/id_ed25519.pub", "monkey.py", "aws/credentials.md", ".aws/config", "data/env", "keyboard.txt",
])
def test_ordinary_names(rel: str) -> None:
    assert not looks_secret(rel)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile.train").write_text("FROM scratch\nCOPY . /app\n")
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "job.yaml").write_text(SPEC)
    return tmp_path


def test_a_dotenv_in_the_context_is_refused_naming_it(project: Path) -> None:
    (project / ".env").write_text("WANDB_API_KEY=secret\n")
    (project / "keys").mkdir()
    (project / "keys" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(UsageError) as caught:
        refuse_secret_files(project, project / "Dockerfile.train")
    error = caught.value
    assert error.exit_code == 2
    assert error.where == f"build context {project}"
    assert ".env, keys/id_rsa look like a secret" in error.what
    assert error.next_step == (f"add .env to {project / '.dockerignore'} (or move it out of the context), "
                               "then submit again")


def test_a_dockerignored_secret_is_not_sent_so_not_refused(project: Path) -> None:
    (project / ".env").write_text("WANDB_API_KEY=secret\n")
    (project / "tls.pem").write_text("x")
    (project / ".dockerignore").write_text(".env\n*.pem\n")
    refuse_secret_files(project, project / "Dockerfile.train")


def test_an_allow_list_dockerignore_keeps_them_out(project: Path) -> None:
    (project / ".env").write_text("A=1\n")
    (project / ".dockerignore").write_text("*\n!train.py\n")
    refuse_secret_files(project, project / "Dockerfile.train")


def test_a_reincluded_secret_is_refused(project: Path) -> None:
    (project / ".env").write_text("A=1\n")
    (project / ".dockerignore").write_text("*\n!train.py\n!.env\n")
    with pytest.raises(UsageError, match=r"\.env looks like a secret"):
        refuse_secret_files(project, project / "Dockerfile.train")


def _dry_run(project: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["submit", "job.yaml", "--dry-run"], env={"SUBMITTER_BUCKET": "b-unit"})
    return result.exit_code, result.output


def test_submit_dry_run_refuses_with_exit_2(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "sub").mkdir()
    (project / "sub" / ".env.production").write_text("TOKEN=x\n")
    code, output = _dry_run(project, monkeypatch)
    assert code == 2, output
    assert "sub/.env.production looks like a secret" in output
    assert "next: add sub/.env.production to" in output
    assert "Traceback" not in output


def test_submit_dry_run_passes_once_ignored(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / ".env").write_text("TOKEN=x\n")
    (project / ".dockerignore").write_text(".env\n")
    code, output = _dry_run(project, monkeypatch)
    assert code == 0, output
