"""The ECR adapter: the training-image repository (created with scan on push, immutable tags and a
lifecycle policy), image lookups by tag, and registry credentials from GetAuthorizationToken (cached).

Every botocore ClientError leaves this module as a `submitter.errors.AwsError` naming the IAM action.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from submitter.aws.session import Aws
from submitter.errors import AwsError

# Keep the newest KEEP_IMAGES tagged images and drop untagged ones after UNTAGGED_DAYS. Tags are content
# hashes, so an old tag is only needed to re-run an old experiment: 100 covers months of iteration, and
# runs record the digest, so an expired image fails loudly at pull time rather than silently changing.
KEEP_IMAGES = 100
UNTAGGED_DAYS = 7
LIFECYCLE_POLICY: dict[str, Any] = {
    "rules": [
        {
            "rulePriority": 1,
            "description": f"expire untagged images after {UNTAGGED_DAYS} days",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": UNTAGGED_DAYS,
            },
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": f"keep the newest {KEEP_IMAGES} images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_IMAGES},
            "action": {"type": "expire"},
        },
    ]
}

# Refresh a cached token this long before ECR says it expires (tokens last 12 hours).
REFRESH_MARGIN_S = 15 * 60
# A token whose expiresAt is already past when it arrives (the sandbox's moto returns a fixed 2015 date)
# is trusted for this long in this process only: refetching would return the same date, forever.
PAST_EXPIRY_GRACE_S = 10 * 60


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for `docker login`/push/pull against one registry host."""

    username: str
    password: str
    registry: str  # host[:port], no scheme
    expires_at: float  # epoch seconds, as ECR reported it

    def auth_config(self) -> dict[str, str]:
        """The docker SDK's `auth_config` for push and inspect_distribution."""
        return {"username": self.username, "password": self.password, "serveraddress": self.registry}


@dataclass(frozen=True)
class Repository:
    name: str
    uri: str  # host/name as ECR reports it
    created: bool


class TokenCache:
    """Registry tokens in memory, and on disk under `directory` (0600 files) when one is given."""

    def __init__(self, directory: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self._directory = directory
        self._clock = clock
        self._memory: dict[str, tuple[RegistryAuth, float]] = {}  # key -> (auth, use until)

    def get(self, key: str) -> RegistryAuth | None:
        entry = self._memory.get(key)
        if entry is None:
            entry = self._load(key)
        if entry is None or entry[1] <= self._clock():
            return None
        self._memory[key] = entry
        return entry[0]

    def put(self, key: str, auth: RegistryAuth) -> RegistryAuth:
        now = self._clock()
        until = auth.expires_at - REFRESH_MARGIN_S
        if until <= now:
            # Already expired on arrival: use it for this process a little while, never persist it.
            self._memory[key] = (auth, now + PAST_EXPIRY_GRACE_S)
            return auth
        self._memory[key] = (auth, until)
        self._store(key, auth, until)
        return auth

    def _path(self, key: str) -> Path | None:
        if self._directory is None:
            return None
        return self._directory / f"ecr-auth-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.json"

    def _load(self, key: str) -> tuple[RegistryAuth, float] | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return RegistryAuth(**data["auth"]), float(data["until"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged cache file is just a miss

    def _store(self, key: str, auth: RegistryAuth, until: float) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"auth": asdict(auth), "until": until}, handle)
        except OSError:
            pass  # the cache only saves a call; failing to write it must not fail a submit


# One cache per process for callers that do not bring their own.
_PROCESS_CACHE = TokenCache()

# IAM action behind each ECR operation we call, for the "next step" of an error.
_ACTIONS = {
    "CreateRepository": "ecr:CreateRepository",
    "DescribeRepositories": "ecr:DescribeRepositories",
    "PutLifecyclePolicy": "ecr:PutLifecyclePolicy",
    "DescribeImages": "ecr:DescribeImages",
    "GetAuthorizationToken": "ecr:GetAuthorizationToken",
    "TagResource": "ecr:TagResource",
}


class Ecr:
    """ECR calls for one session; `cache` holds registry tokens (process-wide by default)."""

    def __init__(self, aws: Aws, cache: TokenCache | None = None) -> None:
        self._aws = aws
        self._client = aws.client("ecr")
        self._cache = cache if cache is not None else _PROCESS_CACHE

    # ------------------------------------------------------------------------------------ repository

    def ensure_repository(self, name: str) -> Repository:
        """The repository `name`, created with scan on push, IMMUTABLE tags and LIFECYCLE_POLICY if missing.

        An existing repository is used as it is: its settings may be an administrator's choice.
        """
        try:
            found = self._call("DescribeRepositories", repositoryNames=[name])["repositories"][0]
            return Repository(name, found["repositoryUri"], created=False)
        except AwsError as err:
            if err.code != "RepositoryNotFoundException":
                raise
        try:
            made = self._call(
                "CreateRepository",
                repositoryName=name,
                imageTagMutability="IMMUTABLE",
                imageScanningConfiguration={"scanOnPush": True},
                encryptionConfiguration={"encryptionType": "AES256"},
                tags=[{"Key": "managed-by", "Value": "submitter"}],
            )["repository"]
        except AwsError as err:
            if err.code != "RepositoryAlreadyExistsException":  # lost a race with another submit
                raise
            return self.ensure_repository(name)
        policy = json.dumps(LIFECYCLE_POLICY)
        self._call("PutLifecyclePolicy", repositoryName=name, lifecyclePolicyText=policy)
        return Repository(name, made["repositoryUri"], created=True)

    def repository(self, name: str) -> Repository | None:
        """The repository `name` as it is, or None when it does not exist (nothing is created)."""
        try:
            found = self._call("DescribeRepositories", repositoryNames=[name])["repositories"][0]
        except AwsError as err:
            if err.code != "RepositoryNotFoundException":
                raise
            return None
        return Repository(name, found["repositoryUri"], created=False)

    def image_digest(
        self, repository: str, tag: str | None, *, digest: str | None = None, registry_id: str | None = None
    ) -> str | None:
        """The manifest digest of `repository:tag` (or of `@digest`), or None when ECR has no such image."""
        image_id = {"imageDigest": digest} if digest else {"imageTag": tag or "latest"}
        extra = {"registryId": registry_id} if registry_id else {}
        try:
            details = self._call("DescribeImages", repositoryName=repository, imageIds=[image_id], **extra)
        except AwsError as err:
            if err.code in ("ImageNotFoundException", "RepositoryNotFoundException"):
                return None
            raise
        images = details.get("imageDetails") or []
        return str(images[0]["imageDigest"]) if images else None

    # ------------------------------------------------------------------------------------------ auth

    def registry_auth(self, registry: str | None = None) -> RegistryAuth:
        """Credentials for the registry: `registry` (host[:port]) when given, else `Aws.registry`, else
        the host of ECR's proxyEndpoint. Served from the cache until shortly before expiry."""
        host = registry or self._aws.registry
        key = f"{self._aws.region}|{self._aws.endpoint_url or 'aws'}|{host or 'default'}"
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        data = self._call("GetAuthorizationToken")["authorizationData"][0]
        return self._cache.put(key, decode_token(data, host))

    # -------------------------------------------------------------------------------------- plumbing

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        method = getattr(self._client, _snake(operation))
        try:
            return method(**kwargs)
        except ClientError as exc:
            raise translate(exc, operation) from exc


def decode_token(data: dict[str, Any], registry: str | None = None) -> RegistryAuth:
    """One `authorizationData` entry -> RegistryAuth. The token is base64 of `user:password`."""
    raw = base64.b64decode(data["authorizationToken"]).decode("utf-8")
    username, _, password = raw.partition(":")
    host = registry or (urlparse(data["proxyEndpoint"]).netloc if data.get("proxyEndpoint") else "")
    expires: Any = data.get("expiresAt")
    expires_at = float(expires.timestamp()) if hasattr(expires, "timestamp") else float(expires or 0)
    return RegistryAuth(username, password, host, expires_at)


def translate(exc: Any, operation: str) -> AwsError:
    """A botocore ClientError -> AwsError with the IAM action or the fix as the next step."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", str(exc)))
    action = _ACTIONS.get(operation, f"ecr:{operation}")
    denied = code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation")
    if denied or "not authorized" in message:
        next_step = f"allow `{action}` on the repository for your IAM identity (or the repository policy)"
    elif code in ("UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException"):
        next_step = "refresh your AWS credentials (e.g. `aws sso login`) and check SUBMITTER_PROFILE"
    elif code == "LimitExceededException":
        next_step = "delete unused repositories or images, or ask AWS for a higher ECR quota"
    else:
        next_step = f"check the repository name and region; the call needs `{action}`"
    return AwsError("ECR", operation, code, message, next_step)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
