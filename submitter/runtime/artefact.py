"""The instance runtime as one artefact: a zipapp of `submitter.contract` and `submitter.runtime`, built
byte-for-byte reproducibly, so the copy staged in S3 (and checked by the boot script) is the one tested.

Interface used by the submit side: `build()`, `sha256()`, `user_data(values)`, `batch_command()`.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from functools import lru_cache
from importlib import resources

SHEBANG = b"#!/usr/bin/env python3\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest time: no build time leaks into the bytes
_MAIN = b"import sys\nfrom submitter.runtime.entry import main\nsys.exit(main(sys.argv[1:]))\n"


def _sources() -> list[tuple[str, bytes]]:
    root = resources.files("submitter")
    files = [("submitter/__init__.py", b""), ("submitter/contract.py", root.joinpath("contract.py").read_bytes())]
    runtime = root.joinpath("runtime")
    for item in sorted(runtime.iterdir(), key=lambda p: p.name):
        if item.name.endswith((".py", ".sh")):
            files.append((f"submitter/runtime/{item.name}", item.read_bytes()))
    return [("__main__.py", _MAIN), *files]


@lru_cache(maxsize=1)
def build() -> bytes:
    """The artefact's bytes: the same for the same sources, whenever and wherever it is built."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in _sources():
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=9)
    return SHEBANG + buffer.getvalue()


def sha256() -> str:
    return hashlib.sha256(build()).hexdigest()
