"""Settings: one immutable object built from the environment and `.env`, read once at the CLI edge.

Everything below the CLI receives a Settings; nothing else reads os.environ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from submitter.errors import SettingsError

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}

# name, default, meaning: the README's settings table is generated from this list.
REFERENCE: list[tuple[str, str, str]] = [
    ("SUBMITTER_REGION", "AWS_REGION, AWS_DEFAULT_REGION, else us-east-1", "AWS region for every call"),
    ("SUBMITTER_PROFILE", "AWS_PROFILE", "AWS named profile (credentials come from the usual AWS chain)"),
    ("SUBMITTER_BUCKET", "(none; `init` creates one)", "private S3 bucket holding runs, inputs and logs"),
    ("SUBMITTER_PREFIX", "submitter", "key prefix inside the bucket: segments of A-Za-z0-9 . _ - joined by /"),
    ("SUBMITTER_ECR_REPOSITORY", "submitter", "ECR repository for training images"),
    ("SUBMITTER_REGISTRY", "(from ECR)", "registry endpoint override, host[:port] (the sandbox sets it)"),
    ("SUBMITTER_SSH_KEY", "(none: no key on instances)", "EC2 key pair on instances, for `ssh` (`init --key-pair`)"),
    ("SUBMITTER_HOME", "~/.submitter", "local state: sandbox files, ssh keys, caches (never the source of truth)"),
    ("SUBMITTER_SANDBOX", "0", "1: every command talks to the local sandbox instead of AWS"),
    ("SUBMITTER_SANDBOX_PORT", "45660", "first of the sandbox's three loopback ports (AWS API, registry, control)"),
    ("SUBMITTER_DEBUG", "0", "1: show tracebacks (same as --debug)"),
    ("SUBMITTER_BATCH_MAX_VCPUS", "256", "AWS Batch backend: the spot compute environments' maximum vCPUs"),
    ("SUBMITTER_SPOT_ADVISOR_URL", "AWS's Spot Instance Advisor data (the sandbox: its own copy)",
     "where the interruption-frequency bands are read from (https, or this machine)"),
    ("SUBMITTER_BUDGET", "(none: no budget)", "USD per calendar month (UTC) for every run in the bucket and prefix: "
     "`submit` refuses past it, workers stop taking runs at it"),
    ("SUBMITTER_CACHE_MAX_AGE_DAYS", "30", "`gc` drops a warm image cache snapshot (`submitter cache`) older than "
     "this many days (0: every one not mapped by a live submission)"),
]

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
# The prefix is spliced into S3 keys, IAM ARNs and policy conditions, and the boot script: a quote, a newline
# or an IAM wildcard (* ?) there would widen or break them, so only plain path segments are accepted.
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
PREFIX_MAX = 128


@dataclass(frozen=True)
class Settings:
    region: str = "us-east-1"
    profile: str | None = None
    bucket: str | None = None
    prefix: str = "submitter"
    ecr_repository: str = "submitter"
    registry: str | None = None
    ssh_key: str | None = None  # EC2 key pair name; None: instances get no key (no ssh)
    home: Path = Path("~/.submitter").expanduser()
    sandbox: bool = False
    sandbox_port: int = 45660
    debug: bool = False
    batch_max_vcpus: int = 256
    spot_advisor_url: str | None = None  # None: AWS's document (placement/advisor.py), or the sandbox's copy
    budget: float | None = None  # SUBMITTER_BUDGET, USD per calendar month; None: no budget
    cache_max_age_days: int = 30  # SUBMITTER_CACHE_MAX_AGE_DAYS: gc drops older warm cache snapshots

    @property
    def sandbox_dir(self) -> Path:
        return self.home / "sandbox"

    def key_file(self, key_pair: str) -> Path:
        """Where the private key of EC2 key pair `key_pair` lives (`init --key-pair` writes it; `ssh` reads it)."""
        return self.home / "keys" / f"{key_pair}.pem"

    def with_sandbox(self) -> Settings:
        return replace(self, sandbox=True)


def load(environ: Mapping[str, str], cwd: Path) -> Settings:
    """Settings from `environ` over `.env` in `cwd` (the environment wins, as with docker compose)."""
    values = dict(_dotenv(cwd / ".env"))
    values.update({k: v for k, v in environ.items() if v is not None})

    def get(name: str) -> str | None:
        value = values.get(name)
        return value.strip() if isinstance(value, str) and value.strip() else None

    region = get("SUBMITTER_REGION") or get("AWS_REGION") or get("AWS_DEFAULT_REGION") or "us-east-1"
    if not _REGION.match(region):
        raise SettingsError("SUBMITTER_REGION", f"{region!r} is not an AWS region name", "use e.g. us-east-1")
    bucket = get("SUBMITTER_BUCKET")
    if bucket and not _BUCKET.match(bucket):
        raise SettingsError(
            "SUBMITTER_BUCKET", f"{bucket!r} is not a valid S3 bucket name",
            "use 3-63 lowercase letters, digits, dots and hyphens, or run `submitter init` to create one",
        )
    repository = get("SUBMITTER_ECR_REPOSITORY") or "submitter"
    if not _REPOSITORY.match(repository):
        raise SettingsError(
            "SUBMITTER_ECR_REPOSITORY", f"{repository!r} is not a valid ECR repository name",
            "use lowercase letters, digits and . _ - / separators",
        )
    prefix = _prefix(get("SUBMITTER_PREFIX") or "submitter")
    home = Path(get("SUBMITTER_HOME") or "~/.submitter").expanduser()
    port = get("SUBMITTER_SANDBOX_PORT") or "45660"
    if not port.isdigit() or not 1024 <= int(port) <= 65530:
        raise SettingsError(
            "SUBMITTER_SANDBOX_PORT", f"{port!r} is not a port number from 1024 to 65530",
            "set SUBMITTER_SANDBOX_PORT=45660 (the sandbox uses it and the next two ports)",
        )
    max_vcpus = get("SUBMITTER_BATCH_MAX_VCPUS") or "256"
    if not max_vcpus.isdigit() or not 1 <= int(max_vcpus) <= 100000:
        raise SettingsError(
            "SUBMITTER_BATCH_MAX_VCPUS", f"{max_vcpus!r} is not a whole number of vCPUs from 1 to 100000",
            "set SUBMITTER_BATCH_MAX_VCPUS=256 (the most vCPUs the Batch compute environment may run at once)",
        )
    budget = _budget(get("SUBMITTER_BUDGET"))
    max_age = get("SUBMITTER_CACHE_MAX_AGE_DAYS") or "30"
    if not max_age.isdigit() or int(max_age) > 3650:
        raise SettingsError("SUBMITTER_CACHE_MAX_AGE_DAYS", f"{max_age!r} is not a whole number of days from 0 to 3650",
                            "set e.g. SUBMITTER_CACHE_MAX_AGE_DAYS=30, or unset it for 30")
    return Settings(
        region=region,
        profile=get("SUBMITTER_PROFILE") or get("AWS_PROFILE"),
        bucket=bucket,
        prefix=prefix,
        ecr_repository=repository,
        registry=get("SUBMITTER_REGISTRY"),
        ssh_key=get("SUBMITTER_SSH_KEY"),
        home=home,
        sandbox=_flag(values, "SUBMITTER_SANDBOX"),
        sandbox_port=int(port),
        debug=_flag(values, "SUBMITTER_DEBUG"),
        batch_max_vcpus=int(max_vcpus),
        spot_advisor_url=_advisor_url(get("SUBMITTER_SPOT_ADVISOR_URL")),
        budget=budget,
        cache_max_age_days=int(max_age),
    )


def _advisor_url(url: str | None) -> str | None:
    if url and not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise SettingsError("SUBMITTER_SPOT_ADVISOR_URL", f"{url!r} is neither an https URL nor this machine",
                            "unset it (AWS's Spot Instance Advisor data is used) or give an https:// URL")
    return url


def _budget(raw: str | None) -> float | None:
    """SUBMITTER_BUDGET as USD: a positive amount, `$` and thousands separators allowed."""
    if raw is None:
        return None
    try:
        value = float(raw.replace("$", "").replace(",", "").strip())
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e9:  # also refuses nan and inf
        raise SettingsError("SUBMITTER_BUDGET", f"{raw!r} is not an amount of US dollars above 0",
                            "set e.g. SUBMITTER_BUDGET=500 (USD per calendar month), or unset it for no budget")
    return value


def _prefix(raw: str) -> str:
    """SUBMITTER_PREFIX as segments of [A-Za-z0-9._-] joined by single slashes (outer slashes dropped)."""
    prefix = raw.strip("/")
    segments = prefix.split("/")
    bad = next((s for s in segments if not _PREFIX_SEGMENT.match(s) or s in (".", "..")), None)
    if bad is not None or len(prefix) > PREFIX_MAX:
        what = (f"is longer than {PREFIX_MAX} characters" if bad is None
                else "has an empty segment (// or only slashes)" if bad == ""
                else f"has the segment {bad!r}, which is . or .." if bad in (".", "..")
                else f"has the segment {bad!r}, with a character other than letters, digits, . _ -")
        raise SettingsError(
            "SUBMITTER_PREFIX", f"{raw!r} {what}",
            f"use segments of letters, digits, . _ - separated by single slashes, at most {PREFIX_MAX} "
            "characters (e.g. submitter or team/alice)",
        )
    return prefix


def _flag(values: Mapping[str, str | None], name: str) -> bool:
    raw = (values.get(name) or "").strip().lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise SettingsError(name, f"{raw!r} is not a yes/no value", f"set {name}=1 or {name}=0")


def _dotenv(path: Path) -> Mapping[str, str | None]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return dotenv_values(path)


def secret_values(names: list[str], environ: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """Look up secret values by name (environment over .env) at submit time; never from the spec."""
    values = dict(_dotenv(cwd / ".env"))
    values.update(environ)
    missing = [n for n in names if not values.get(n)]
    if missing:
        raise SettingsError(
            "secrets", f"no value for {', '.join(missing)} in the environment or .env",
            f"export {missing[0]}=... or add it to .env, then submit again",
        )
    return {n: str(values[n]) for n in names}
