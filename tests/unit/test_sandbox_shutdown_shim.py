"""How the simulated host's shutdown/poweroff/halt shim reads its arguments."""

from __future__ import annotations

from datetime import datetime

import pytest

from submitter.sandbox.shutdown_shim import Request, ShimUsage, parse

NOW = datetime(2026, 1, 15, 12, 0, 0)


@pytest.mark.parametrize(
    ("prog", "args", "expected"),
    [
        ("/usr/sbin/shutdown", ["-h", "now"], Request("poweroff", 0.0)),
        ("shutdown", ["now"], Request("poweroff", 0.0)),
        ("shutdown", ["-P", "+0"], Request("poweroff", 0.0)),
        ("shutdown", ["-h", "+30"], Request("poweroff", 1800.0)),
        ("shutdown", ["-h", "+5", "dead-man switch"], Request("poweroff", 300.0)),
        ("shutdown", [], Request("poweroff", 60.0)),  # systemd's default is one minute
        ("shutdown", ["-h", "12:30"], Request("poweroff", 1800.0)),
        ("shutdown", ["-h", "11:00"], Request("poweroff", 23 * 3600.0)),  # tomorrow
        ("shutdown", ["-c"], Request("cancel")),
        ("shutdown", ["-r", "now"], Request("reboot")),
        ("/usr/sbin/poweroff", [], Request("poweroff", 0.0)),
        ("halt", ["-f"], Request("poweroff", 0.0)),
    ],
)
def test_parse(prog: str, args: list[str], expected: Request) -> None:
    assert parse(prog, args, NOW) == expected


@pytest.mark.parametrize("args", [["-h", "soon"], ["--frobnicate"]])
def test_parse_rejects_what_it_does_not_understand(args: list[str]) -> None:
    with pytest.raises(ShimUsage):
        parse("shutdown", args, NOW)
