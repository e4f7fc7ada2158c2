"""The job's metrics stream: JSON lines it appends to SUBMITTER_METRICS_FILE, shipped whole to S3
(Layout.metrics_stream) when it changed, so curves exist while the run goes on, and restored on the next attempt
so they span attempts.

The file sits in a directory of its own that the job writes (never the agent's logs directory: the job must not
be able to write the agent's log), so it is read as the job's files are (files.open_below): never through a link,
never a FIFO, and at most contract.METRICS_CAP bytes of it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from submitter import contract
from submitter.contract import Layout
from submitter.runtime import files
from submitter.runtime.store import Store

log = logging.getLogger("submitter.runtime")


def capped(data: bytes, cap: int = contract.METRICS_CAP) -> bytes:
    """The first `cap` bytes of the stream, cut after the last whole line within them."""
    if len(data) <= cap:
        return data
    head = data[:cap]
    return head[:head.rfind(b"\n") + 1]


class MetricsShipper:
    def __init__(self, store: Store, layout: Layout, run_id: str, directory: Path) -> None:
        self.store, self.key, self.directory = store, layout.metrics_stream(run_id), directory
        self.shipped: tuple[int, int] | None = None  # (size, mtime) of the file last shipped
        self.full = False  # the cap was reached: what is kept no longer changes
        self.told = False  # the file could not be read once: said in the run's log, not at every tick

    @property
    def path(self) -> Path:
        return self.directory / contract.METRICS_FILE

    def restore(self) -> None:
        """The earlier attempts' stream, for the job to append to (writable by the image's user, whoever that is)."""
        if self.store.fetch(self.key, self.path):
            self.path.chmod(0o666)
            self.shipped = self._mark()
            log.info("metrics stream restored (%d bytes)", self.path.stat().st_size)

    def _mark(self) -> tuple[int, int] | None:
        try:
            fd = files.open_below(self.directory, contract.METRICS_FILE)
        except OSError:
            return None
        try:
            found = os.fstat(fd)
        finally:
            os.close(fd)
        return found.st_size, found.st_mtime_ns

    def ship(self) -> None:
        """Upload the stream when it changed since the last upload (a missing file is no stream: nothing to do)."""
        if self.full:
            return
        try:
            fd = files.open_below(self.directory, contract.METRICS_FILE)
        except FileNotFoundError:
            return
        except OSError as exc:
            if not self.told:
                self.told = True
                log.warning("metrics stream %s is not shipped: %s (it must be a regular file, not a link)",
                            self.path, exc)
            return
        with os.fdopen(fd, "rb") as source:
            found = os.fstat(source.fileno())
            mark = (found.st_size, found.st_mtime_ns)
            if mark == self.shipped:
                return
            data = source.read(contract.METRICS_CAP + 1)
        if len(data) > contract.METRICS_CAP:
            data, self.full = capped(data), True
            log.warning("metrics stream: over %d MiB; only its first %d MiB (whole lines) are kept in %s",
                        contract.METRICS_CAP >> 20, contract.METRICS_CAP >> 20, self.store.uri(self.key))
        self.store.put_bytes(self.key, data, "application/x-ndjson")
        self.shipped = mark
