"""The runtime artefact's command line: `runtime.pyz agent --submission ...` (the pool worker, from the boot
script) or `runtime.pyz batch` (the Batch wrapper, from the job definition's command)."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

USAGE = "usage: runtime.pyz agent --submission S --bucket B [--prefix P] --group G --instance-id I --region R" \
        " [--bucket-owner ACCOUNT]\n" \
        "       runtime.pyz batch\n" \
        "       runtime.pyz cache (the agent's arguments)"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("agent", "batch", "cache"):
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] == "batch":
        from submitter.runtime import batch

        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s wrapper %(levelname)s %(message)s")
        return batch.main()
    from submitter.runtime import pool

    if argv[0] == "cache":  # the warm image cache's builder (`submitter cache`): same arguments as the agent
        from submitter.runtime import cache

        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s cache %(levelname)s %(message)s")
        return cache.main(argv[1:])
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s agent %(levelname)s %(message)s")
    agent = pool.Agent(pool.parse_args(argv[1:]))

    def on_term(signum: int, frame: Any) -> None:
        logging.getLogger("submitter.runtime").warning("signal %d: the host is shutting down", signum)
        agent.host.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    return agent.main()
