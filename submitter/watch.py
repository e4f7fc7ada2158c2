"""`status --watch`: read the runs' states again and again, showing each read, until every run has ended.

The loop is given how to read and how to show (the CLI passes S3 reads and a rich live view), so its end
condition is tested without a terminal or a clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from submitter import contract

States = list[dict[str, Any]]


def ended(states: States) -> bool:
    """Every run has reached a state it never leaves (an interrupted run is queued again, so it has not)."""
    return all(st.get("state") in contract.TERMINAL for st in states)


def until_ended(read: Callable[[], States], show: Callable[[States], None], every_s: float,
                sleep: Callable[[float], None] = time.sleep) -> States:
    """Read and show every `every_s` seconds until `ended`; returns the last read. Ctrl-C during a wait stops
    watching and returns the last read too: leaving a watch is not an error."""
    states = read()
    show(states)
    while not ended(states):
        try:
            sleep(every_s)
        except KeyboardInterrupt:
            return states
        states = read()
        show(states)
    return states
