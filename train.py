#!/usr/bin/env python3
"""The example training job: a small MLP classifier in pure Python that behaves like a real
spot-friendly job (settings from env, a checkpoint every epoch, exact resume, save-and-exit on SIGTERM).

Standard library only, so it runs on any base image that has python3 (see Dockerfile.train).

Environment (all optional):
  EPOCHS=6 LR=0.1 BATCH=32 SEED=0 HIDDEN=16 SAMPLES=2000   hyper-parameters and dataset size
  CHECKPOINT_DIR=/checkpoints OUTPUT_DIR=/outputs DATA_DIR=/data
  SUBMITTER_METRICS_FILE   set by the agent: one JSON line per epoch is appended to it (the metrics stream)
      $DATA_DIR/train.csv, if present, replaces the synthetic data: numeric feature columns, then an
      integer class label (0..K-1) last; a non-numeric first row is taken as a header.
  EPOCH_SECONDS=0   extra seconds each epoch takes (tests use it to interrupt mid-run)
  FAIL_WITH=N       exit with code N after the first epoch, once partial outputs are written

Exit codes: 0 done, 2 bad settings or unusable checkpoint, 128+signal after SIGTERM/SIGINT,
FAIL_WITH's value on a requested failure.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

CHECKPOINT_NAME = "checkpoint.json"
CHECKPOINT_FORMAT = 1
MOMENTUM = 0.9
HELD_OUT_FRACTION = 0.2

Matrix = list[list[float]]
Sample = tuple[list[float], int]


class SettingsError(Exception):
    """A setting or an existing checkpoint this run cannot use; exits 2 with the message."""


@dataclass(frozen=True)
class Config:
    """Everything the run reads from the environment."""

    epochs: int
    lr: float
    batch: int
    seed: int
    hidden: int
    samples: int
    checkpoint_dir: Path
    output_dir: Path
    data_dir: Path
    epoch_seconds: float
    fail_with: int | None
    metrics_file: Path | None = None

    def hyper_parameters(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "batch": self.batch, "seed": self.seed,
                "hidden": self.hidden, "samples": self.samples}


def _env_int(env: dict[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; set it to e.g. {default}") from None
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise SettingsError(f"{name}={value} is out of range; it must be {bounds}")
    return value


def _env_float(env: dict[str, str], name: str, default: float, low: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to e.g. {default}") from None
    if not math.isfinite(value) or value < low:
        raise SettingsError(f"{name}={raw} is out of range; it must be a finite number >= {low}")
    return value


def load_config(env: dict[str, str]) -> Config:
    fail_raw = env.get("FAIL_WITH", "").strip()
    return Config(
        epochs=_env_int(env, "EPOCHS", 6, 1),
        lr=_env_float(env, "LR", 0.1, 0.0),
        batch=_env_int(env, "BATCH", 32, 1),
        seed=_env_int(env, "SEED", 0, 0),
        hidden=_env_int(env, "HIDDEN", 16, 1),
        samples=_env_int(env, "SAMPLES", 2000, 10),
        checkpoint_dir=Path(env.get("CHECKPOINT_DIR") or "/checkpoints"),
        output_dir=Path(env.get("OUTPUT_DIR") or "/outputs"),
        data_dir=Path(env.get("DATA_DIR") or "/data"),
        epoch_seconds=_env_float(env, "EPOCH_SECONDS", 0.0, 0.0),
        fail_with=_env_int(env, "FAIL_WITH", 0, 1, 255) if fail_raw else None,
        metrics_file=Path(env["SUBMITTER_METRICS_FILE"]) if env.get("SUBMITTER_METRICS_FILE") else None,
    )


# --- data -------------------------------------------------------------------------------------------


def synthetic_rings(samples: int, seed: int) -> list[Sample]:
    """Three noisy concentric rings: no linear model separates them, a small MLP does in a few epochs."""
    # A string seed is hashed with sha512, so the data does not depend on PYTHONHASHSEED or the platform.
    rng = random.Random(f"data:{seed}")
    data: list[Sample] = []
    for i in range(samples):
        label = i % 3
        radius = 1.0 + label + rng.gauss(0.0, 0.3)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        data.append(([radius * math.cos(angle), radius * math.sin(angle)], label))
    return data


def read_csv(path: Path) -> list[Sample]:
    data: list[Sample] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            try:
                features = [float(cell) for cell in row[:-1]]
                label = int(row[-1])
            except ValueError:
                if number == 1:
                    continue  # a header row
                raise SettingsError(f"{path}:{number}: expected numbers then an integer label") from None
            if not features or label < 0:
                raise SettingsError(f"{path}:{number}: need >= 1 feature and a label >= 0")
            if data and len(features) != len(data[0][0]):
                raise SettingsError(f"{path}:{number}: {len(features)} features, row 1 had {len(data[0][0])}")
            data.append((features, label))
    if len(data) < 10:
        raise SettingsError(f"{path}: {len(data)} rows; need at least 10 to hold some out")
    return data


def load_dataset(config: Config) -> tuple[list[Sample], list[Sample], str]:
    """Train and held-out splits, standardised with the train split's statistics, and their source."""
    csv_path = config.data_dir / "train.csv"
    if csv_path.is_file():
        data, source = read_csv(csv_path), str(csv_path)
        random.Random(f"split:{config.seed}").shuffle(data)
    else:
        data, source = synthetic_rings(config.samples, config.seed), "synthetic-rings"
    cut = len(data) - max(1, int(len(data) * HELD_OUT_FRACTION))
    train, held_out = data[:cut], data[cut:]
    width = len(train[0][0])
    mean = [sum(x[i] for x, _ in train) / len(train) for i in range(width)]
    std = [math.sqrt(sum((x[i] - mean[i]) ** 2 for x, _ in train) / len(train)) or 1.0 for i in range(width)]

    def scale(split: list[Sample]) -> list[Sample]:
        return [([(v - m) / s for v, m, s in zip(x, mean, std, strict=True)], y) for x, y in split]

    return scale(train), scale(held_out), source


# --- model ------------------------------------------------------------------------------------------


def init_params(n_in: int, hidden: int, n_out: int, seed: int) -> dict[str, Any]:
    rng = random.Random(f"init:{seed}")
    return {
        "w1": [[rng.gauss(0.0, 1.0 / math.sqrt(n_in)) for _ in range(n_in)] for _ in range(hidden)],
        "b1": [0.0] * hidden,
        "w2": [[rng.gauss(0.0, 1.0 / math.sqrt(hidden)) for _ in range(hidden)] for _ in range(n_out)],
        "b2": [0.0] * n_out,
    }


def zeros_like(params: dict[str, Any]) -> dict[str, Any]:
    return {name: [[0.0] * len(row) for row in value] if isinstance(value[0], list) else [0.0] * len(value)
            for name, value in params.items()}


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def forward(params: dict[str, Any], x: list[float]) -> tuple[list[float], list[float]]:
    """Hidden activations and class probabilities for one sample."""
    h = [math.tanh(b + dot(row, x)) for row, b in zip(params["w1"], params["b1"], strict=True)]
    z = [b + dot(row, h) for row, b in zip(params["w2"], params["b2"], strict=True)]
    top = max(z)  # subtracting the max keeps exp() from overflowing
    e = [math.exp(v - top) for v in z]
    total = sum(e)
    return h, [v / total for v in e]


def sgd_step(params: dict[str, Any], velocity: dict[str, Any], batch: list[Sample], lr: float) -> float:
    """One momentum-SGD step on the batch's mean cross-entropy; returns that loss."""
    grads = zeros_like(params)
    loss = 0.0
    w2 = params["w2"]
    for x, y in batch:
        h, p = forward(params, x)
        loss -= math.log(max(p[y], 1e-12))
        dz = p[:]
        dz[y] -= 1.0
        for k, d in enumerate(dz):
            grads["b2"][k] += d
            row = grads["w2"][k]
            for j, hj in enumerate(h):
                row[j] += d * hj
        for j, hj in enumerate(h):
            da = sum(dz[k] * w2[k][j] for k in range(len(dz))) * (1.0 - hj * hj)
            grads["b1"][j] += da
            row = grads["w1"][j]
            for i, v in enumerate(x):
                row[i] += da * v
    scale = lr / len(batch)
    for name, value in params.items():
        if isinstance(value[0], list):
            for row, vrow, grow in zip(value, velocity[name], grads[name], strict=True):
                for i in range(len(row)):
                    vrow[i] = MOMENTUM * vrow[i] - scale * grow[i]
                    row[i] += vrow[i]
        else:
            vel, grad = velocity[name], grads[name]
            for i in range(len(value)):
                vel[i] = MOMENTUM * vel[i] - scale * grad[i]
                value[i] += vel[i]
    return loss / len(batch)


def evaluate(params: dict[str, Any], data: list[Sample]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    loss, correct = 0.0, 0
    for x, y in data:
        _, p = forward(params, x)
        loss -= math.log(max(p[y], 1e-12))
        correct += max(range(len(p)), key=p.__getitem__) == y
    return loss / len(data), correct / len(data)


# --- checkpoints and outputs --------------------------------------------------------------------------


def write_atomic(path: Path, document: dict[str, Any]) -> None:
    """Readers (the S3 sync, a resumed run) see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(document, handle, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    # The rename itself is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temps(directory: Path) -> None:
    """Temp files left by a process killed mid-write (SIGKILL) would otherwise be synced to S3 forever."""
    for temp in directory.glob(f".{CHECKPOINT_NAME}.*.tmp"):
        with contextlib.suppress(OSError):
            temp.unlink()


def run_identity(config: Config, source: str, n_in: int, n_out: int) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed; EPOCHS may change (to train longer)."""
    return {"format": CHECKPOINT_FORMAT, "lr": config.lr, "batch": config.batch, "seed": config.seed,
            "hidden": config.hidden, "samples": config.samples, "source": source,
            "inputs": n_in, "classes": n_out}


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        state["rng"] = _tuples(state["rng"])  # Random.setstate() needs the tuples JSON turned into lists
        random.Random().setstate(state["rng"])
    except (ValueError, KeyError, TypeError) as error:
        raise SettingsError(f"{path} is not a checkpoint this program wrote ({error}); "
                            "delete it to start over") from None
    if state.get("identity") != identity:
        raise SettingsError(f"{path} was written with other settings {state.get('identity')}, this run "
                            f"has {identity}; delete it or point CHECKPOINT_DIR elsewhere")
    return state


def metrics_document(config: Config, status: str, history: list[dict[str, Any]], source: str,
                     exit_code: int) -> dict[str, Any]:
    last = history[-1] if history else {}
    return {  # the held-out accuracy first: `submitter compare` ranks runs by the first metric
        "accuracy": last.get("accuracy"),
        "loss": last.get("loss"),
        "train_loss": last.get("train_loss"),
        "status": status,
        "exit_code": exit_code,
        "epochs_completed": len(history),
        "epochs": config.epochs,
        "hyper_parameters": config.hyper_parameters(),
        "seed": config.seed,
        "data": source,
        "history": history,
    }


def write_outputs(config: Config, state: dict[str, Any], status: str, source: str, exit_code: int) -> None:
    write_atomic(config.output_dir / "metrics.json",
                 metrics_document(config, status, state["history"], source, exit_code))
    write_atomic(config.output_dir / "model.json", {
        "architecture": "mlp-tanh-softmax",
        "inputs": state["identity"]["inputs"], "hidden": config.hidden,
        "classes": state["identity"]["classes"], "epoch": state["epoch"],
        "normalisation": "standardised with the train split's mean and std",
        "params": state["params"],
    })


def append_metrics(path: Path | None, line: dict[str, Any]) -> None:
    """One line of the metrics stream (SUBMITTER_METRICS_FILE), which the agent ships to S3 while the run goes on.
    Optional: a stream that cannot be written costs the curves, never the run."""
    if path is None:
        return
    try:
        with path.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(line, separators=(",", ":")) + "\n")
    except OSError as error:
        print(f"train.py: metrics stream {path}: {error}", file=sys.stderr, flush=True)


# --- the run ----------------------------------------------------------------------------------------


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop polls it between batches so the handler never runs mid-update."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def wait(self, seconds: float) -> None:
        """Sleep, but wake within ~20 ms of a signal so a spot notice's 2-minute budget is not wasted."""
        deadline = time.monotonic() + seconds
        while self.signum is None and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.02, left))


def log(message: str) -> None:
    print(message, flush=True)


def train(config: Config, stop: StopFlag) -> int:
    train_set, held_out, source = load_dataset(config)
    n_in, n_out = len(train_set[0][0]), max(y for _, y in train_set + held_out) + 1
    identity = run_identity(config, source, n_in, n_out)
    checkpoint = config.checkpoint_dir / CHECKPOINT_NAME
    config.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(config.checkpoint_dir)

    state = load_checkpoint(checkpoint, identity)
    if state is None:
        params = init_params(n_in, config.hidden, n_out, config.seed)
        state = {"identity": identity, "epoch": 0, "params": params, "velocity": zeros_like(params),
                 "rng": random.Random(f"shuffle:{config.seed}").getstate(), "history": []}
        log(f"training on {source}: {len(train_set)} train / {len(held_out)} held-out samples, "
            f"{n_in} inputs, {n_out} classes")
    else:
        log(f"resumed from epoch {state['epoch']}")

    # `state` is always the last *completed* epoch, serialised from the moment it was made, so a
    # signal mid-epoch saves exactly what an uninterrupted run had at that point.
    saved = json.loads(json.dumps(state))
    params, velocity = saved["params"], saved["velocity"]
    rng = random.Random()
    rng.setstate(state["rng"])

    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        order = list(range(len(train_set)))
        rng.shuffle(order)
        starts = range(0, len(order), config.batch)
        losses = []
        for start in starts:
            # Spread over the batches so a signal lands mid-epoch, with half-updated weights to discard.
            stop.wait(config.epoch_seconds / len(starts))
            if stop.signum is not None:
                break
            batch = [train_set[i] for i in order[start:start + config.batch]]
            losses.append(sgd_step(params, velocity, batch, config.lr))
        if stop.signum is not None:
            break
        loss, accuracy = evaluate(params, held_out)
        train_loss = sum(losses) / len(losses)
        history = [*state["history"], {"epoch": epoch, "loss": loss, "accuracy": accuracy,
                                       "train_loss": train_loss}]
        state = {"identity": identity, "epoch": epoch, "params": params, "velocity": velocity,
                 "rng": rng.getstate(), "history": history}
        write_atomic(checkpoint, state)
        # Continue from a private copy: `state` must stay exactly what was written.
        saved = json.loads(json.dumps(state))
        params, velocity = saved["params"], saved["velocity"]
        append_metrics(config.metrics_file, {"step": epoch, "accuracy": accuracy, "loss": loss,
                                             "train_loss": train_loss})
        log(f"epoch {epoch}/{config.epochs} loss={loss:.4f} acc={accuracy:.4f} train_loss={train_loss:.4f}")
        if config.fail_with is not None:
            write_outputs(config, state, "failed", source, config.fail_with)
            log(f"failing on purpose after epoch {epoch}: FAIL_WITH={config.fail_with}")
            return config.fail_with

    # A signal that lands after the last epoch changes nothing: the run is done, so it reports done.
    if stop.signum is not None and state["epoch"] < config.epochs:
        code = 128 + stop.signum
        write_atomic(checkpoint, state)
        write_outputs(config, state, "interrupted", source, code)
        log(f"{signal.Signals(stop.signum).name} received: checkpoint saved at epoch {state['epoch']}")
        return code

    write_outputs(config, state, "completed", source, 0)
    last = state["history"][-1]
    log(f"done: {state['epoch']} epochs, loss={last['loss']:.4f} acc={last['accuracy']:.4f}, "
        f"outputs in {config.output_dir}")
    return 0


def main() -> int:
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        config = load_config(dict(os.environ))
        log(f"config: {json.dumps({k: str(v) for k, v in asdict(config).items()})}")
        return train(config, stop)
    except SettingsError as error:
        print(f"train.py: {error}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
