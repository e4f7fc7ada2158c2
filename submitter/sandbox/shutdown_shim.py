#!/usr/bin/python3
"""`shutdown`, `poweroff` and `halt` inside a simulated host: ending the host is ending the instance.

Installed in the host image as /sbin/shutdown (poweroff and halt link to it). Stdlib only: it runs on
the image's python3. The host's init (PID 1) exits on SIGTERM; the runner sees the host end and applies
the instance's shutdown behaviour, as EC2 does. `shutdown -h +N` schedules (a boot script's dead-man
switch), `shutdown -c` cancels, `now`/`+0` and poweroff/halt end the host at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

PENDING = "/run/submitter-shutdown.pid"


@dataclass(frozen=True)
class Request:
    """What the caller asked for: cancel, or power off after `delay` seconds (reboot is refused)."""

    action: str  # "poweroff", "cancel" or "reboot"
    delay: float = 0.0


class ShimUsage(ValueError):
    """Arguments this shim does not understand."""


def parse(prog: str, args: list[str], now: datetime | None = None) -> Request:
    """Parse systemd-style shutdown/poweroff/halt arguments into a Request."""
    name = os.path.basename(prog)
    if name in ("poweroff", "halt"):
        if "--reboot" in args:
            return Request("reboot")
        return Request("poweroff")
    action = "poweroff"
    when: str | None = None
    for arg in args:
        if arg in ("-h", "-P", "--poweroff", "-H", "--halt", "--no-wall", "-k"):
            continue
        if arg in ("-r", "--reboot"):
            action = "reboot"
        elif arg == "-c":
            return Request("cancel")
        elif arg.startswith("-"):
            raise ShimUsage(f"unsupported option {arg}")
        elif when is None:
            when = arg
        # anything after the time is the wall message: ignored
    if action == "reboot":
        return Request("reboot")
    return Request("poweroff", _delay(when or "+1", now or datetime.now()))


def _delay(when: str, now: datetime) -> float:
    """Seconds until `when`: now, +MINUTES, or HH:MM (today, else tomorrow), as systemd's shutdown."""
    if when == "now":
        return 0.0
    if when.startswith("+") and when[1:].isdigit():
        return float(int(when[1:]) * 60)
    if when.isdigit():
        return float(int(when) * 60)
    parts = when.split(":")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        target = now.replace(hour=int(parts[0]), minute=int(parts[1]), second=0, microsecond=0)
        if target <= now:
            target += timedelta(days=1)
        return (target - now).total_seconds()
    raise ShimUsage(f"cannot parse time {when!r} (use now, +MINUTES or HH:MM)")


def _cancel() -> None:
    try:
        with open(PENDING) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError):
        os.unlink(PENDING)


def _power_off() -> None:
    os.kill(1, signal.SIGTERM)


def main(argv: list[str]) -> int:
    try:
        request = parse(argv[0], argv[1:])
    except ShimUsage as exc:
        print(f"shutdown: {exc}", file=sys.stderr)
        return 1
    if request.action == "reboot":
        print("shutdown: reboot is not emulated by the submitter sandbox; the host stays up", file=sys.stderr)
        return 1
    _cancel()  # a new schedule replaces the pending one, as systemd does
    if request.action == "cancel":
        return 0
    if request.delay <= 0:
        _power_off()
        return 0
    if os.fork() == 0:  # the scheduled power-off outlives the caller
        os.setsid()
        with open(PENDING, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(request.delay)
        _power_off()
        os._exit(0)
    at = datetime.now() + timedelta(seconds=request.delay)
    print(f"Shutdown scheduled for {at:%a %Y-%m-%d %H:%M:%S}, use 'shutdown -c' to cancel.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
