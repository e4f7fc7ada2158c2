"""How the image steps word their errors and sizes: one line of an engine message, a byte count, and the
failures several steps share (a full disk, refused registry credentials)."""

from __future__ import annotations

from submitter.errors import ImageError

DISK_FULL = "no space left on device"


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else text.strip()


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def disk_full(where: str, message: str) -> ImageError:
    return ImageError(
        where, f"no space left on device ({first_line(message)})",
        "free disk space: `docker system prune` (and `docker builder prune`), then submit again",
    )


def auth_refused(registry: str, message: str) -> ImageError:
    return ImageError(
        f"registry {registry}", f"refused the credentials ({first_line(message)})",
        "check that your identity may call `ecr:GetAuthorizationToken` and that SUBMITTER_REGISTRY / "
        "the region point at the right registry",
    )
