"""The example training program (train.py) keeps the job contract: it learns, is deterministic, saves and
exits 143 on SIGTERM, resumes exactly, and never leaves a torn checkpoint. Runs it as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

TRAIN = Path(__file__).resolve().parents[2] / "train.py"
# Small enough that a run takes a fraction of a second; the default-size run has its own test.
FAST = {"EPOCHS": "4", "SAMPLES": "600", "SEED": "7"}


def _env(tmp: Path, **knobs: str) -> dict[str, str]:
    # Built from scratch so an EPOCHS or LR in the caller's shell cannot leak into the run.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CHECKPOINT_DIR": str(tmp / "checkpoints"),
           "OUTPUT_DIR": str(tmp / "outputs"), "DATA_DIR": str(tmp / "data")}
    env.update(knobs)
    return env


def _run(tmp: Path, **knobs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TRAIN)], env=_env(tmp, **knobs), capture_output=True,
                          text=True, timeout=60, check=False)


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _start(tmp: Path, **knobs: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(TRAIN)], env=_env(tmp, **knobs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _read_until(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    assert proc.stdout is not None
    lines = []
    while line := proc.stdout.readline():
        lines.append(line)
        if line.startswith(prefix):
            return lines
    pytest.fail(f"train.py exited before printing {prefix!r}: {''.join(lines)}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    result = _run(tmp, **FAST)
    assert result.returncode == 0, result.stderr
    outputs = tmp / "outputs"
    return {"metrics": _json(outputs / "metrics.json"), "model": _json(outputs / "model.json")}


def test_default_settings_learn_well_above_chance(tmp_path: Path) -> None:
    started = time.monotonic()
    result = _run(tmp_path)
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    metrics = _json(tmp_path / "outputs" / "metrics.json")
    assert metrics["status"] == "completed"
    assert metrics["epochs_completed"] == 6
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2, 3, 4, 5, 6]
    assert metrics["accuracy"] > 0.75  # three balanced classes: chance is 1/3
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert metrics["hyper_parameters"] == {"epochs": 6, "lr": 0.1, "batch": 32, "seed": 0, "hidden": 16,
                                           "samples": 2000}
    assert "epoch 6/6 loss=" in result.stdout and " acc=" in result.stdout
    assert _json(tmp_path / "outputs" / "model.json")["epoch"] == 6
    assert _json(tmp_path / "checkpoints" / "checkpoint.json")["epoch"] == 6
    assert elapsed < 10


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(
        tmp_path: Path, uninterrupted: dict[str, Any]) -> None:
    again = _run(tmp_path / "again", **FAST)
    other = _run(tmp_path / "other", **{**FAST, "SEED": "8"})

    assert again.returncode == 0 and other.returncode == 0
    assert _json(tmp_path / "again" / "outputs" / "metrics.json") == uninterrupted["metrics"]
    other_history = _json(tmp_path / "other" / "outputs" / "metrics.json")["history"]
    assert other_history != uninterrupted["metrics"]["history"]


def test_sigterm_mid_epoch_saves_last_completed_epoch_and_resume_is_exact(
        tmp_path: Path, uninterrupted: dict[str, Any]) -> None:
    proc = _start(tmp_path, **FAST, EPOCH_SECONDS="0.6")
    _read_until(proc, "epoch 2/")
    time.sleep(0.2)  # well inside epoch 3, after some of its batches have updated the weights
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)

    assert proc.returncode == 143, err
    assert "SIGTERM received: checkpoint saved at epoch 2" in out
    assert _json(tmp_path / "checkpoints" / "checkpoint.json")["epoch"] == 2
    partial = _json(tmp_path / "outputs" / "metrics.json")
    assert partial["status"] == "interrupted" and partial["epochs_completed"] == 2
    assert partial["history"] == uninterrupted["metrics"]["history"][:2]

    resumed = _run(tmp_path, **FAST)

    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from epoch 2" in resumed.stdout
    assert "epoch 1/" not in resumed.stdout
    assert _json(tmp_path / "outputs" / "metrics.json") == uninterrupted["metrics"]
    assert _json(tmp_path / "outputs" / "model.json") == uninterrupted["model"]


def test_sigterm_before_the_first_epoch_ends_saves_epoch_0(
        tmp_path: Path, uninterrupted: dict[str, Any]) -> None:
    proc = _start(tmp_path, **FAST, EPOCH_SECONDS="5")
    _read_until(proc, "training on")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)

    assert proc.returncode == 143, err
    assert "SIGTERM received: checkpoint saved at epoch 0" in out
    resumed = _run(tmp_path, **FAST)
    assert "resumed from epoch 0" in resumed.stdout
    assert _json(tmp_path / "outputs" / "metrics.json") == uninterrupted["metrics"]


def test_fail_with_exits_with_that_code_after_writing_partial_outputs(tmp_path: Path) -> None:
    result = _run(tmp_path, **FAST, FAIL_WITH="3")

    assert result.returncode == 3
    assert "FAIL_WITH=3" in result.stdout
    metrics = _json(tmp_path / "outputs" / "metrics.json")
    assert metrics["status"] == "failed" and metrics["exit_code"] == 3
    assert metrics["epochs_completed"] == 1 and len(metrics["history"]) == 1
    assert _json(tmp_path / "outputs" / "model.json")["epoch"] == 1
    assert _json(tmp_path / "checkpoints" / "checkpoint.json")["epoch"] == 1


def test_checkpoint_always_parses_while_being_rewritten(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoints" / "checkpoint.json"
    checkpoint.parent.mkdir(parents=True)
    stale = checkpoint.parent / ".checkpoint.json.99999.tmp"
    stale.write_text('{"half', encoding="utf-8")  # what a SIGKILL mid-write leaves behind
    proc = _start(tmp_path, EPOCHS="12", SAMPLES="150", BATCH="8")
    epochs_seen = set()
    while proc.poll() is None:
        try:
            text = checkpoint.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        epochs_seen.add(json.loads(text)["epoch"])  # raises on a torn file
    proc.communicate(timeout=10)

    assert proc.returncode == 0
    assert len(epochs_seen) > 1  # the reader really overlapped several rewrites
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["checkpoint.json"]


def test_unreadable_or_foreign_checkpoint_stops_the_run_instead_of_overwriting_it(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoints" / "checkpoint.json"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text('{"epoch": 3, "par', encoding="utf-8")

    torn = _run(tmp_path, **FAST)

    assert torn.returncode == 2
    assert "delete it to start over" in torn.stderr
    assert checkpoint.read_text(encoding="utf-8") == '{"epoch": 3, "par'

    checkpoint.unlink()
    assert _run(tmp_path, **FAST).returncode == 0
    foreign = _run(tmp_path, **{**FAST, "SEED": "8"})
    assert foreign.returncode == 2
    assert "other settings" in foreign.stderr


def test_trains_on_data_dir_train_csv_when_present(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = ["x,y,label"] + [f"{i % 10},{(i * 7) % 10},{int(i % 10 > 4)}" for i in range(200)]
    (data / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    result = _run(tmp_path, EPOCHS="4")

    assert result.returncode == 0, result.stderr
    metrics = _json(tmp_path / "outputs" / "metrics.json")
    assert metrics["data"] == str(data / "train.csv")
    assert metrics["accuracy"] > 0.9
    assert _json(tmp_path / "outputs" / "model.json")["inputs"] == 2


@pytest.mark.parametrize(("name", "value"), [("EPOCHS", "six"), ("LR", "nan"), ("FAIL_WITH", "300")])
def test_bad_setting_exits_2_naming_it(tmp_path: Path, name: str, value: str) -> None:
    result = _run(tmp_path, **{name: value})

    assert result.returncode == 2
    assert name in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_the_metrics_stream_has_one_line_per_epoch_across_a_resume(
        tmp_path: Path, uninterrupted: dict[str, Any]) -> None:
    stream = tmp_path / "metrics" / "metrics.jsonl"
    stream.parent.mkdir()
    first = _run(tmp_path, **{**FAST, "EPOCHS": "2"}, SUBMITTER_METRICS_FILE=str(stream))
    assert first.returncode == 0, first.stderr
    resumed = _run(tmp_path, **FAST, SUBMITTER_METRICS_FILE=str(stream))  # a later attempt appends to it
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in stream.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"step": h["epoch"], "loss": h["loss"], "accuracy": h["accuracy"],
                      "train_loss": h["train_loss"]} for h in uninterrupted["metrics"]["history"]]
    assert _json(tmp_path / "outputs" / "metrics.json") == uninterrupted["metrics"]  # the stream changes no output
    assert list(uninterrupted["metrics"])[0] == "accuracy"  # the metric `compare` ranks by default


def test_a_metrics_stream_that_cannot_be_written_costs_the_curves_not_the_run(tmp_path: Path) -> None:
    result = _run(tmp_path, **FAST, SUBMITTER_METRICS_FILE=str(tmp_path / "no-such-dir" / "m.jsonl"))
    assert result.returncode == 0 and "metrics stream" in result.stderr
