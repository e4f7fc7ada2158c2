"""The job spec's value types and the patterns they are checked against: durations, env maps, container
directories, image references, names, finite numbers, and what counts as a secret."""

from __future__ import annotations

import math
import posixpath
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

from submitter.contract import MAX_KEEP_S

DEFAULT_DOCKERFILE = "Dockerfile.train"
MAX_RUNS = 1000  # runs per submission (a sweep's combinations)
# A leading '-' would make every run id of the job read as an option on the command line.
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
# Graviton (arm64) families: the generation digit is followed by "g" (c6g, c7gn, m8g, t4g, g5g, im4gn, is4gen,
# hpc7g), plus a1 and the Apple-silicon mac2 family. g4dn or c7a are x86_64: their "g"/"a" come elsewhere.
ARM64_FAMILY = re.compile(r"^(?:[a-z]+\d+g[a-z]*(?:-[a-z0-9]+)?|a1|mac2(?:-[a-z0-9]+)?)$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Names that say "I am a credential": their values belong in `secrets`, never in the spec.
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
SECRET_VALUE = re.compile(r"(AKIA|ASIA)[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|gh[pousr]_[A-Za-z0-9]{30,}")
# Container directories refused together with everything under them. /proc, /sys and /dev are the kernel's
# views that docker mounts itself; /etc holds the image's configuration and the files docker writes for the
# container (hosts, resolv.conf); /bin, /sbin, /lib*, /usr hold its programs, which a mount would hide so the
# command never starts; /boot, /run and /var are the system's own state. /data, /outputs, /workspace... are free.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/etc", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/usr", "/run", "/var")
# Refused as themselves only: a mount there hides the whole image or every home in it; below them is fine.
SYSTEM_DIRS = frozenset({"/", "/root", "/home", *SYSTEM_TREES})
MAX_CONTAINER_PATH = 255  # a directory name longer than one file name is a mistake, not a layout
MAX_HOST_PATH = 4096  # PATH_MAX on Linux
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1 and the Unicode line breaks
# docker's image reference grammar (distribution/reference): [REGISTRY[:PORT]/]PATH[:TAG][@DIGEST], the path
# lowercase; a digest is pinned here to sha256, the only one registries hand out.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"^(?:(?P<registry>{_DOMAIN})/)?(?P<path>{_PATH_PART}(?:/{_PATH_PART})*)"
    r"(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$",
    re.ASCII,
)
MAX_IMAGE_NAME = 255  # registry and path together (distribution/reference's NameTotalLengthMax)
MAX_IMAGE_REFERENCE = MAX_IMAGE_NAME + 1 + 128 + 1 + 71  # with ':' tag and '@sha256:' digest; checked first


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
    if not math.isfinite(seconds):
        raise ValueError(f"{expected}, got {value!r} (not a finite number)")
    if not low <= seconds <= high:
        raise ValueError(f"must be between {bounds}, got {value!r}")
    return seconds


def _duration(value: Any) -> float:
    return _seconds(value, "4h, 90m or 1h30m", 60, 14 * 86400, "1m and 14d")


def keep_seconds(value: Any) -> float:
    """limits.keep_on_failure and `submit --keep-on-failure`: 0 (the default) keeps nothing."""
    if value in (0, "0", None) or (isinstance(value, str) and value.strip() in ("0", "0s", "0m")):
        return 0.0
    return _seconds(value, "0 (off), 20m or 1h", 60, MAX_KEEP_S, "1m and 24h (or 0: off)")


def _grace(value: Any) -> float:
    """The SIGTERM-to-SIGKILL grace period."""
    return _seconds(value, "90s or 2m", 5, 900, "5s and 15m")


def scalar_text(value: Any) -> str:
    """An env or build-arg value as the container will see it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number; quote it if you mean the text, like \"inf\"")
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
KeepWindow = Annotated[float, BeforeValidator(keep_seconds)]
TextMap = Annotated[dict[str, str], BeforeValidator(_text_map)]


def finite(value: Any) -> Any:
    """Before a number field's own checks: .inf, .nan (and text that reads as them) are no price or amount."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return value
    try:
        number = float(value)
    except ValueError:
        return value  # not a number at all: the field's own type check says so
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return value


def system_dir(path: str) -> str | None:
    """The system directory that the normalised container path `path` is or lies under; None when it is free."""
    if path in SYSTEM_DIRS:
        return path
    return next((top for top in SYSTEM_TREES if path.startswith(top + "/")), None)


def container_dir(value: Any, example: str) -> str:
    """A container directory as docker will mount it: absolute, normalised, and not one of the system's own.

    Refused rather than repaired: `/data/../etc` is not silently read as /etc, and ':' or ',' would split
    docker's --volume and --mount arguments.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected an absolute container path, like {example}")
    text = value.strip()
    if CONTROL.search(text):
        raise ValueError(f"{text!r} holds a control character or line break; write a plain path, like {example}")
    if len(text) > MAX_CONTAINER_PATH:
        raise ValueError(f"is {len(text)} characters long; at most {MAX_CONTAINER_PATH}, like {example}")
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute container path, like {example}, got {text!r}")
    if ".." in text.split("/"):
        raise ValueError(f"{text!r} has a '..' segment; write the directory it means without it, like {example}")
    if ":" in text or "," in text:
        raise ValueError(f"{text!r} holds ':' or ','; docker's --volume and --mount split on them, so use a path "
                         f"without them, like {example}")
    clean = "/" + posixpath.normpath(text).lstrip("/")
    system = system_dir(clean)
    if system:
        where = "is a system directory" if system == clean else f"is under the system directory {system}"
        raise ValueError(f"{text!r} {where}; a mount there hides or replaces the image's own files. Use a "
                         f"directory of your own, like {example}")
    return clean


def host_path(value: Any) -> Any:
    """A path on this machine as written (resolved later, spec/paths.py): no control characters, a sane length."""
    if isinstance(value, str):
        if CONTROL.search(value):
            raise ValueError(f"{value!r} holds a control character or line break; write a plain path")
        if len(value) > MAX_HOST_PATH:
            raise ValueError(f"is {len(value)} characters long; at most {MAX_HOST_PATH}")
    return value


def image_reference(value: str) -> str:
    """`value` if docker reads it as one image reference (and never as an option); ValueError naming what is off."""
    example = "ACCOUNT.dkr.ecr.REGION.amazonaws.com/repo@sha256:<64 hex>"
    if value.startswith("-"):
        raise ValueError(f"{value!r} starts with '-', which docker would read as an option; expected an image "
                         f"reference like {example}")
    if CONTROL.search(value) or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} holds a space or control character; expected an image reference like {example}")
    if len(value) > MAX_IMAGE_REFERENCE:
        raise ValueError(f"is {len(value)} characters long; an image reference is at most {MAX_IMAGE_REFERENCE}")
    match = IMAGE_REFERENCE.match(value)
    if not match or ("/" not in match["path"] and not match["registry"]):
        raise ValueError(f"{value!r} is not an image reference [REGISTRY[:PORT]/]PATH[:TAG][@sha256:DIGEST] with a "
                         f"lowercase path; expected one like {example}")
    name = (match["registry"] + "/" if match["registry"] else "") + match["path"]
    if len(name) > MAX_IMAGE_NAME:
        raise ValueError(f"its name is {len(name)} characters long; docker allows at most {MAX_IMAGE_NAME}")
    return value
