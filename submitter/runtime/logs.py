"""A run's two logs in S3: the process's output shipped as numbered chunks while it runs (then whole), and
the runtime's own log of the run, continued across attempts."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from submitter.contract import Layout
from submitter.runtime.rules import split_chunk
from submitter.runtime.store import Store

log = logging.getLogger("submitter.runtime")


class LogShipper:
    """Ships what is new in the local log file as the run's next numbered chunk. Batch also echoes it to
    stdout, where CloudWatch Logs picks it up."""

    def __init__(self, store: Store, layout: Layout, run_id: str, path: Path, number: int,
                 echo: bool = False) -> None:
        self.store, self.layout, self.run_id, self.path, self.number = store, layout, run_id, path, number
        self.offset = path.stat().st_size if path.exists() else 0  # earlier attempts' log is already shipped
        self.echo = echo

    def ship(self, final: bool = False) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as source:
            source.seek(self.offset)
            piece, _ = split_chunk(source.read(), final)
        if not piece:
            return
        self.store.put_bytes(self.layout.chunk(self.run_id, self.number), piece)
        if self.echo:
            sys.stdout.write(piece.decode(errors="replace"))
            sys.stdout.flush()
        self.number += 1
        self.offset += len(piece)

    def finish(self) -> None:
        """The last chunk, then the whole log (every attempt's) as container.log."""
        self.ship(final=True)
        if self.path.exists():
            self.store.upload_file(self.path, self.layout.container_log(self.run_id))


class RunLog:
    """The run's agent log (Layout.agent_log): earlier attempts' lines first, then this attempt's, uploaded at
    the end."""

    def __init__(self, store: Store, layout: Layout, run_id: str, path: Path, label: str) -> None:
        self.store, self.key, self.path = store, layout.agent_log(run_id), path
        if not store.fetch(self.key, path):
            path.write_bytes(b"")
        self.handler: logging.Handler | None = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter(f"%(asctime)s {label} %(levelname)s %(message)s"))
        logging.getLogger().addHandler(self.handler)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)  # the run's log has the INFO lines whatever the root logger says

    def upload(self) -> None:
        if self.handler is not None:
            self.handler.flush()
        try:
            self.store.upload_file(self.path, self.key)
        except Exception as exc:  # the run's status says how it ended; its log is the lesser loss
            log.error("could not upload the run's log: %s", exc)

    def close(self) -> None:
        if self.handler is None:
            return
        self.handler.flush()
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        self.handler = None
        self.upload()
