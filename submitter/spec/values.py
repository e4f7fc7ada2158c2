"""The job spec's value types and the patterns they are checked against: durations, env maps, container
directories, names, and what counts as a secret."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

DEFAULT_DOCKERFILE = "Dockerfile.train"
MAX_RUNS = 1000  # runs per submission (a sweep's combinations)
NAME = re.compile(r"^[a-z0-9-]{1,40}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Names that say "I am a credential": their values belong in `secrets`, never in the spec.
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
SECRET_VALUE = re.compile(r"(AKIA|ASIA)[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|gh[pousr]_[A-Za-z0-9]{30,}")
SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr", "/var"}


def _seconds(value: Any, example: str, low: float, high: float, bounds: str) -> float:
    """A duration ('4h', '90m', '1h30m', '45s', '2d') or a number of seconds, within [low, high]."""
    expected = f"expected a duration like {example}"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{expected}, got {value!r}")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"{expected}, got {value!r}")
    if not low <= seconds <= high:
        raise ValueError(f"must be between {bounds}, got {value!r}")
    return seconds


def _duration(value: Any) -> float:
    return _seconds(value, "4h, 90m or 1h30m", 60, 14 * 86400, "1m and 14d")


def _grace(value: Any) -> float:
    """The SIGTERM-to-SIGKILL grace period."""
    return _seconds(value, "90s or 2m", 5, 900, "5s and 15m")


def scalar_text(value: Any) -> str:
    """An env or build-arg value as the container will see it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(f"expected a string or number, got {type(value).__name__}")


def _text_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of NAME: value")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME.match(key):
            raise ValueError(f"{key!r} is not a valid variable name (letters, digits, _; not starting with a digit)")
        try:
            out[key] = scalar_text(item)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return out


Duration = Annotated[float, BeforeValidator(_duration)]
Grace = Annotated[float, BeforeValidator(_grace)]
TextMap = Annotated[dict[str, str], BeforeValidator(_text_map)]


def absolute_dir(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute container path for {what}, like /{what}")
    clean = "/" + value.strip("/")
    if clean in SYSTEM_DIRS:
        raise ValueError(f"{value!r} is a system directory; use a directory of your own, like /{what}")
    return clean
