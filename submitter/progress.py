"""Progress reporting for long steps (image build and push): a live rich view on a terminal,
plain lines otherwise (pipes, CI logs, `--json`), and a null reporter for tests.

Everything that reports progress takes a `Progress`; the CLI picks the implementation with `for_stream`.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    """What a long step tells the user while it runs."""

    def step(self, text: str) -> None:
        """A new phase or build step began (e.g. `Step 3/5 : RUN pip install ...`), or one output line."""

    def layer(self, layer_id: str, status: str, current: int | None = None, total: int | None = None) -> None:
        """A layer's push state changed (Preparing, Pushing current/total, Pushed, Layer already exists)."""

    def done(self, text: str) -> None:
        """The step finished; `text` is its one-line summary."""


class NullProgress:
    """Says nothing; records what it was told so tests can look."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def step(self, text: str) -> None:
        self.events.append(("step", text))

    def layer(self, layer_id: str, status: str, current: int | None = None, total: int | None = None) -> None:
        self.events.append(("layer", (layer_id, status, current, total)))

    def done(self, text: str) -> None:
        self.events.append(("done", text))


class PlainProgress:
    """One line per event worth a line: build steps and their output, and each layer's final push state.

    Byte counters are not printed (they would flood a log); the summary line carries the totals.
    """

    _FINAL = ("Pushed", "Layer already exists", "Mounted from")

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr

    def step(self, text: str) -> None:
        self._write(text)

    def layer(self, layer_id: str, status: str, current: int | None = None, total: int | None = None) -> None:
        if status.startswith(self._FINAL):
            self._write(f"  {layer_id}: {status}")

    def done(self, text: str) -> None:
        self._write(text)

    def _write(self, text: str) -> None:
        self._stream.write(text.rstrip("\n") + "\n")
        self._stream.flush()


class RichProgress:
    """A live view: build steps scroll above, one bar per layer while pushing. For terminals only."""

    _FINAL = ("Pushed", "Layer already exists", "Mounted from")

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self._console = Console(file=stream if stream is not None else sys.stderr)
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}

    def step(self, text: str) -> None:
        self._console.print(text.rstrip("\n"), markup=False, highlight=False)

    def layer(self, layer_id: str, status: str, current: int | None = None, total: int | None = None) -> None:
        if self._bars is None:
            self._bars = self._new_bars()
            self._bars.start()
        task = self._tasks.get(layer_id)
        if task is None:
            task = self._tasks[layer_id] = self._bars.add_task(layer_id, total=None, status=status)
        fields: dict[str, Any] = {"status": status}
        if total:
            fields["total"] = total
        if current is not None:
            fields["completed"] = current
        if status.startswith(self._FINAL):
            known = self._bars.tasks[task].total or 1
            fields.update(total=known, completed=known)
        self._bars.update(task, **fields)

    def done(self, text: str) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
            self._tasks = {}
        self._console.print(text, markup=False, highlight=False)

    def _new_bars(self) -> Any:
        from rich.progress import BarColumn, DownloadColumn, TextColumn
        from rich.progress import Progress as Bars

        return Bars(
            TextColumn("  {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[status]}"),
            console=self._console,
        )


def for_stream(stream: TextIO | None = None, *, as_json: bool = False) -> Progress:
    """Rich when `stream` (default stderr) is a terminal and output is not JSON; plain lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    if not as_json and stream.isatty():
        return RichProgress(stream)
    return PlainProgress(stream)
