"""The runtime artefact (runtime.pyz): reproducible, exactly the contract package + the on-instance modules +
__main__, standard library and Python 3.9 only, small modules; the unit tests run its code (a lifecycle
attempt imported from the built zip); the boot script and the Batch command fetch it and check its hash."""

from __future__ import annotations

import ast
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from submitter import contract
from submitter.runtime import artefact

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "submitter" / "runtime"
ON_INSTANCE = sorted(p for p in RUNTIME.glob("*.py") if p.name not in artefact.SUBMIT_SIDE)
CONTRACT = sorted((REPO / "submitter" / "contract").glob("*.py"))
OPTIONAL = {"store_boto3.py": {"boto3", "botocore"}}  # imported only when the image has boto3


def _names(data: bytes) -> list[str]:
    assert data.startswith(artefact.SHEBANG)
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_build_is_reproducible_and_holds_exactly_the_runtime() -> None:
    first = artefact.build()
    artefact.build.cache_clear()
    assert artefact.build() == first
    assert artefact.sha256() == hashlib.sha256(first).hexdigest()
    expected = {"__main__.py", "submitter/__init__.py"} | {f"submitter/contract/{p.name}" for p in CONTRACT}
    expected |= {f"submitter/runtime/{p.name}" for p in ON_INSTANCE}
    assert set(_names(first)) == expected and len(_names(first)) == len(expected)
    archive = zipfile.ZipFile(io.BytesIO(first))
    for path in CONTRACT:
        assert archive.read(f"submitter/contract/{path.name}") == path.read_bytes()
    assert {archive.getinfo(n).date_time for n in expected} == {(1980, 1, 1, 0, 0, 0)}


@pytest.mark.parametrize("path", [*CONTRACT, *ON_INSTANCE], ids=lambda p: p.name)
def test_the_runtime_is_python_39_and_standard_library_only(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 9))  # a `match` or other 3.10+ grammar fails here
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    allowed = set(sys.stdlib_module_names) | {"submitter"} | OPTIONAL.get(path.name, set())
    assert imported <= allowed, imported - allowed
    # `X | None` is only safe on 3.9 because annotations are never evaluated.
    assert "from __future__ import annotations" in source or len(tree.body) == 1  # a docstring only
    for node in ast.walk(tree):  # 3.10+ keywords that parse on 3.9 but fail when run
        if isinstance(node, ast.Call):
            words = {k.arg for k in node.keywords}
            assert not words & {"slots", "kw_only", "strict"}, (path.name, node.lineno)
    if path.parent == RUNTIME:
        assert len(source.splitlines()) <= 400
        submitter_imports = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                             and node.module and node.module.startswith("submitter")}
        assert all(m == "submitter" or m.startswith(("submitter.runtime", "submitter.contract"))
                   for m in submitter_imports), submitter_imports


# A Batch attempt through the lifecycle, in a process that has only the standard library and the built zip.
ZIP_LIFECYCLE = r"""
import importlib.util, json, sys
pyz, memory, work = sys.argv[1:4]
sys.path.insert(0, pyz)
from submitter import contract
from submitter.runtime import batch, lifecycle
assert lifecycle.__file__.startswith(pyz) and contract.__file__.startswith(pyz), lifecycle.__file__
spec = importlib.util.spec_from_file_location("runtime_memory", memory)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
store, layout, sub = module.MemoryStore(), contract.Layout("z"), "zexp-20260101-000000-abcdef"
store.put_json(layout.submission_doc(sub), {
    "submission_id": sub, "job": "zexp", "command": [sys.executable, "-S", "-c", "print('from the zip')"],
    "volume_mount": work + "/data", "outputs": work + "/outputs", "checkpoints": None,
    "retries": {"on_interruption": 1, "on_failure": 0}, "inputs": [], "secrets": {"names": []}})
store.put_json(layout.batch_runs(sub), [contract.run_message(sub + "-0", 0, {})])
environ = {"SUBMITTER_SUBMISSION_ID": sub, "SUBMITTER_PREFIX": "z", "PATH": "/usr/bin:/bin"}
code = batch.Wrapper(store, environ, work=__import__("pathlib").Path(work, "w")).main()
status = store.json(layout.status(sub + "-0"))
log = store.objects[layout.container_log(sub + "-0")].decode()
print(json.dumps({"code": code, "state": status["state"], "log": log}))
"""


def test_a_lifecycle_attempt_runs_from_the_built_artefact(tmp_path: Path) -> None:
    pyz = tmp_path / contract.RUNTIME_ARTEFACT
    pyz.write_bytes(artefact.build())
    # -S: no site-packages (so no editable install of this repository, no third-party package).
    out = subprocess.run([sys.executable, "-S", "-c", ZIP_LIFECYCLE, str(pyz),
                          str(Path(__file__).with_name("runtime_memory.py")), str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    result = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "state": "succeeded", "log": "from the zip\n"}


def test_the_artefact_runs_as_a_program(tmp_path: Path) -> None:
    pyz = tmp_path / "runtime.pyz"
    pyz.write_bytes(artefact.build())
    out = subprocess.run([sys.executable, "-S", str(pyz)], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2 and "runtime.pyz agent --submission" in out.stderr


# ----------------------------------------------------------------------------------------- fetch and verify

SHA = "0" * 64


def test_user_data_fetches_the_runtime_from_the_layout_and_checks_its_hash() -> None:
    text = artefact.user_data({"SUBMISSION": "s-1", "BUCKET": "b", "PREFIX": "p", "GROUP": "g",
                               "DEADMAN_MINUTES": 45, "RUNTIME_SHA256": SHA})
    layout = contract.Layout("p")
    assert f"RUNTIME_URI={layout.uri('b', layout.runtime('s-1'))}" in text
    assert f"REPORTS_URI={layout.uri('b', layout.instances('s-1'))}" in text
    assert f"RUNTIME_SHA256={SHA}" in text and "sha256sum -c" in text
    assert "MODE=agent" in text and 'python3 "$RUNTIME" "$MODE" --submission' in text and "{{" not in text
    with pytest.raises(ValueError, match="RUNTIME_SHA256"):
        artefact.user_data({"SUBMISSION": "s", "BUCKET": "b", "PREFIX": "p", "GROUP": "g", "DEADMAN_MINUTES": 1})


FAKE_AWS = r"""#!/usr/bin/env python3
import shutil, sys
args = sys.argv[1:]
if "cp" in args:
    rest = [a for a in args[args.index("cp") + 1:] if not a.startswith("--")]
    if rest[0] == sys.argv[0] + "-KEY" or rest[0].endswith("/submissions/S-1/runtime.pyz") and rest[1] != "-":
        shutil.copy(sys.argv[0] + ".pyz", rest[1])
        sys.exit(0)
print("An error occurred (404) NoSuchKey", file=sys.stderr)
sys.exit(1)
"""


def _run_batch_command(tmp_path: Path, sha: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    aws = bin_dir / "aws"
    aws.write_text(FAKE_AWS)
    aws.chmod(0o755)
    (bin_dir / "aws.pyz").write_bytes(artefact.build())
    python = bin_dir / "python3"  # no site-packages, so no boto3: the AWS CLI path is taken
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SUBMITTER_BUCKET": "b", "SUBMITTER_PREFIX": "p",
           "SUBMITTER_SUBMISSION_ID": "S-1", artefact.RUNTIME_SHA256_ENV: sha, "AWS_REGION": "us-east-1",
           "HOME": str(tmp_path)}
    return subprocess.run(artefact.batch_command(), env=env, capture_output=True, text=True, timeout=60,
                          check=False, cwd=tmp_path)


def test_the_batch_command_refuses_a_runtime_with_another_hash(tmp_path: Path) -> None:
    out = _run_batch_command(tmp_path, SHA)
    assert out.returncode == 64 and "SHA-256 mismatch" in out.stdout + out.stderr


def test_the_batch_command_runs_the_verified_runtime(tmp_path: Path) -> None:
    out = _run_batch_command(tmp_path, artefact.sha256())
    # The wrapper ran (from the fetched zip) and found no submission document behind the fake CLI.
    assert out.returncode == 1 and "submission.json or " in out.stderr, out.stderr
    assert os.path.basename(artefact.batch_command()[0]) == "sh"
