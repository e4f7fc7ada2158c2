"""Two costs of moto's that AWS does not have, taken out of the sandbox's API (never a change of behaviour).

- moto's server looks for the request's service by listing its own package directory on every request
  (`backends.list_of_moto_modules`: a listdir and ~90 isdir calls); the list never changes while it runs.
- moto's SQS reads the clock through datetime arithmetic (`unix_time_millis`, ~3 us) once per message per
  visibility check, and `send_message` reads every queue attribute, whose message counts check every message:
  sending N messages into a queue costs O(N^2) such reads (a 1,000-run sweep: ~1.5 million). The same clock
  from `time.time()` is about 50 times cheaper.

bench/staging.py measures a 1,000-run sweep's staging against a server with these patches, as in the sandbox.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any


def install() -> None:
    from moto import backends
    from moto.sqs import models as sqs_models

    listed = functools.lru_cache(maxsize=1)(lambda: tuple(_original(backends.list_of_moto_modules)()))
    backends.list_of_moto_modules = _mark(listed, backends.list_of_moto_modules)
    slow = _original(sqs_models.unix_time_millis)

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else float(slow(dt))

    sqs_models.unix_time_millis = _mark(unix_time_millis, sqs_models.unix_time_millis)


def _mark(patched: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    """`patched`, remembering the function it replaced (installing twice keeps the first original)."""
    patched.__wrapped_original__ = _original(original)  # type: ignore[attr-defined]
    return patched


def _original(function: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(function, "__wrapped_original__", function)


def serve(argv: list[str]) -> None:
    """`python -m submitter.sandbox.speed -H HOST -p PORT`: a bare moto server with these patches (bench/)."""
    from moto.server import main

    install()
    main(argv)


if __name__ == "__main__":
    import sys

    serve(sys.argv[1:])
