"""The Spot Instance Advisor's interruption-frequency bands, per instance type and region.

Source: the JSON document AWS's Spot Instance Advisor page (aws.amazon.com/ec2/spot/instance-advisor/) reads,
https://spot-bid-advisor.s3.amazonaws.com/spot-advisor-data.json (the URL and the shape are what public tools
that read it use, e.g. the `spotinfo` and `spotadvisor` projects). Its shape:
    {"ranges": [{"index": 0, "label": "<5%", "dots": 0, "max": 5}, ... {"index": 4, "label": ">20%", ...}],
     "spot_advisor": {REGION: {"Linux": {TYPE: {"s": SAVINGS_PERCENT, "r": RANGE_INDEX}}, "Windows": {...}}},
     "instance_types": {TYPE: {"cores", "ram_gb", "emr"}}, ...}
AWS describes the band as "the rate at which Spot has reclaimed capacity during the trailing month", in
ranges <5%, 5-10%, 10-15%, 15-20% and >20%. A band's bounds are read from its label (the document's "max"
values, 5/11/16/22/100 in the live file, are display cut-offs, not the published ranges).

Fetched at run time on the user's machine (stdlib urllib, short timeout), cached in SUBMITTER_HOME with the
time it was fetched, re-fetched when older than a day; a failed fetch falls back to a stale cache (its age is
said) or to no bands. Never raises: the plan goes on without bands. The sandbox serves the same document from
its control endpoint (SUBMITTER_SPOT_ADVISOR_URL points there), so no test touches the internet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitter.placement.facts import Band

URL = "https://spot-bid-advisor.s3.amazonaws.com/spot-advisor-data.json"
FETCH_TIMEOUT_S = 4.0
RETRY_AFTER_S = 15 * 60  # after a failed fetch, plans use what they have (a stale copy, or no bands) this long
MAX_AGE_S = 24 * 3600  # the page's data changes about daily; older than this, fetch again
MAX_BYTES = 32 * 1024 * 1024  # the live document is a few MB; a bigger answer is not it


@dataclass(frozen=True)
class Bands:
    """Bands per instance type (Linux) for one region, and where they came from (for the plan's notes)."""

    by_type: dict[str, Band]
    note: str


def band_from_label(index: int, label: str) -> Band | None:
    """A Band from the document's label: "<5%" -> 0-0.05, "5-10%" -> 0.05-0.10, ">20%" -> 0.20-1.0."""
    text = label.replace(" ", "")
    if m := re.fullmatch(r"<(\d+(?:\.\d+)?)%", text):
        return Band(index, label, 0.0, float(m[1]) / 100)
    if m := re.fullmatch(r">(\d+(?:\.\d+)?)%", text):
        return Band(index, label, float(m[1]) / 100, 1.0)
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)%", text):
        return Band(index, label, float(m[1]) / 100, float(m[2]) / 100)
    return None


def parse(document: Any, region: str, instance_types: list[str]) -> dict[str, Band]:
    """The Linux band of each of `instance_types` in `region`; types the document does not list are left out.
    A document not in the expected shape gives {} (the caller says the bands are unknown)."""
    if not isinstance(document, dict):
        return {}
    ranges: dict[int, Band] = {}
    for item in document.get("ranges") or []:
        if isinstance(item, dict) and isinstance(item.get("index"), int) and isinstance(item.get("label"), str):
            band = band_from_label(item["index"], item["label"])
            if band is not None:
                ranges[band.index] = band
    linux = ((document.get("spot_advisor") or {}).get(region) or {}).get("Linux") or {}
    found: dict[str, Band] = {}
    for instance_type in instance_types:
        entry = linux.get(instance_type)
        index = entry.get("r") if isinstance(entry, dict) else None
        if isinstance(index, int) and index in ranges:
            found[instance_type] = ranges[index]
    return found


def fetch(url: str, timeout: float = FETCH_TIMEOUT_S) -> Any:
    """The document at `url`, parsed; raises OSError/ValueError on any failure."""
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError(f"{url} is neither https nor this machine")
    request = urllib.request.Request(url, headers={"User-Agent": "submitter"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - scheme checked above
        body = answer.read(MAX_BYTES + 1)
    if len(body) > MAX_BYTES:
        raise ValueError(f"the answer is over {MAX_BYTES // 2**20} MB")
    return json.loads(body)


def _age(seconds: float) -> str:
    return f"{seconds / 3600:.0f} h" if seconds < 2 * 86400 else f"{seconds / 86400:.0f} days"


def load(url: str, cache_dir: Path, now: float | None = None, timeout: float = FETCH_TIMEOUT_S) -> tuple[Any, str]:
    """(document or None, a note on where it came from and its age). The cache is one file per URL, holding
    {"url", "fetched_at" (epoch s), "document"} (the sandbox's URL and AWS's do not share one); it is written
    only after a successful fetch."""
    now = time.time() if now is None else now
    cache = cache_dir / f"spot-advisor-{hashlib.sha256(url.encode()).hexdigest()[:12]}.json"  # one per URL
    cached: dict[str, Any] = {}
    try:
        loaded = json.loads(cache.read_text())
        if isinstance(loaded, dict) and loaded.get("url") == url and "document" in loaded:
            cached = loaded
    except (OSError, ValueError):
        pass
    age = now - float(cached.get("fetched_at", 0)) if cached else None
    if cached and age is not None and 0 <= age < MAX_AGE_S:
        return cached["document"], f"Spot Instance Advisor data from {url}, fetched {_age(age)} ago (cached)"
    failed = cache.with_suffix(".failed")  # a fetch that failed lately is not tried again on every plan
    try:
        last_failure = json.loads(failed.read_text())
        since = now - float(last_failure["at"])
        problem = str(last_failure["error"]) if 0 <= since < RETRY_AFTER_S else None
    except (OSError, ValueError, KeyError, TypeError):
        problem = None
    if problem is not None:
        problem = f"{problem}; not tried again until {RETRY_AFTER_S // 60} min after"
    else:
        try:
            document = fetch(url, timeout)
        except (OSError, ValueError) as exc:
            problem = str(exc)
            with contextlib.suppress(OSError):
                cache_dir.mkdir(parents=True, exist_ok=True)
                failed.write_text(json.dumps({"at": now, "error": problem}))
    if problem is not None:
        if cached and age is not None:
            return cached["document"], (f"Spot Instance Advisor data from {url} could not be refreshed ({problem}); "
                                        f"using the cached copy, {_age(age)} old")
        return None, f"interruption bands unknown: the Spot Instance Advisor data could not be read ({problem})"
    with contextlib.suppress(OSError):
        failed.unlink(missing_ok=True)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".part")
        partial.write_text(json.dumps({"url": url, "fetched_at": now, "document": document}))
        partial.replace(cache)
    except OSError:
        pass  # a read-only home only costs a fetch next time
    return document, f"Spot Instance Advisor data from {url}, fetched now"


def bands(url: str, cache_dir: Path, region: str, instance_types: list[str]) -> Bands:
    """The bands of `instance_types` in `region`, with a note saying their source and age (or why none)."""
    document, note = load(url, cache_dir)
    if document is None:
        return Bands({}, note)
    found = parse(document, region, instance_types)
    missing = [t for t in instance_types if t not in found]
    if missing:
        note += f"; no band for {', '.join(missing)} in {region}"
    return Bands(found, note)
