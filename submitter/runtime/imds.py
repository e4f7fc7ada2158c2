"""IMDSv2 from the instance (or a Batch container on it): a session token, then the metadata with it."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

# What a failed IMDS call raises: callers catch these and carry on without the metadata.
IMDS_ERRORS = (OSError, urllib.error.URLError)


class Imds:
    """IMDSv2: a session token from PUT /latest/api/token, sent with every GET."""

    def __init__(self, endpoint: str | None = None, ttl: int = 21600, timeout: float = 3.0) -> None:
        base = endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or "http://169.254.169.254"
        self.base = base.rstrip("/")
        self.ttl = ttl
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0

    def token(self) -> str:
        if self._token is None or time.monotonic() >= self._expires:
            request = urllib.request.Request(f"{self.base}/latest/api/token", method="PUT",
                                             headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.ttl)})
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                self._token = answer.read().decode()
            self._expires = time.monotonic() + self.ttl - 60
        return self._token

    def get(self, path: str) -> str | None:
        """The value at /latest/`path`, None when IMDS has none (404: e.g. no spot notice)."""
        for attempt in (1, 2):
            request = urllib.request.Request(f"{self.base}/latest/{path.lstrip('/')}",
                                             headers={"X-aws-ec2-metadata-token": self.token()})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    return str(answer.read().decode())
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code == 401 and attempt == 1:
                    self._token = None  # expired or revoked: one fresh token, then give up
                    continue
                raise
        return None

    def spot_action(self) -> dict[str, Any] | None:
        raw = self.get("meta-data/spot/instance-action")
        if not raw:
            return None
        try:
            return dict(json.loads(raw))
        except ValueError:
            return {"action": "terminate", "time": ""}

    def placement(self) -> dict[str, str]:
        """instance_type and availability_zone ('unknown' each when IMDS has none); raises IMDS_ERRORS."""
        return {"instance_type": self.get("meta-data/instance-type") or "unknown",
                "availability_zone": self.get("meta-data/placement/availability-zone") or "unknown"}
