"""IAM in the sandbox: moto's access control on, an administrator user for the CLI side, and each instance's
own role credentials for its IMDS.

moto (5.2) authenticates every request once `INITIAL_NO_AUTH_ACTION_COUNT` is reached (we set it to 0 after
the administrator exists) and evaluates the caller's identity policies: actions for every service; the
resource only where moto names it (S3 bucket/object ARNs, SQS queue ARNs, IAM roles, sts:AssumeRole). For
every other service it asks about resource "*", so a statement scoped to an ARN would never match: there we
evaluate the action alone (`install`), which is what docs/sandbox.md states. Conditions and resource policies
are not evaluated. Three evaluation bugs are fixed so that the sandbox does not refuse what AWS allows (or
allow what it refuses): IAM wildcards (`*`, `?`, everything else literal, not a regular expression), a role
principal matches its sessions, and a service principal never matches a user or a session. And one check of
the signature: the query is re-encoded as the client signed it (`signed_path`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, unquote

log = logging.getLogger("submitter.sandbox.iam")

ADMIN_USER = "sandbox-admin"
ADMIN_POLICY = {"Version": "2012-10-17",
                "Statement": [{"Sid": "Administrator", "Effect": "Allow", "Action": "*", "Resource": "*"}]}
CREDENTIALS_S = 3600  # what EC2 hands an instance lasts about this long; it rotates well before expiry
REFRESH_BEFORE_S = 15 * 60  # EC2 refreshes role credentials at least 5 minutes before they expire


def _glob(pattern: str) -> re.Pattern[str]:
    """An IAM wildcard pattern: `*` any run of characters, `?` one character, everything else literal."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("^" + "".join(parts) + "$", re.DOTALL)


def matches(pattern: str, value: str) -> bool:
    """Whether an IAM Resource pattern covers `value`, as AWS (and the sandbox) decide it."""
    return _glob(pattern).match(value) is not None


def _principals(principal: str) -> set[str]:
    """The principal ARNs a caller answers to: an assumed-role session is also its role (and its account)."""
    names = {principal}
    session = re.fullmatch(r"arn:([^:]+):sts::(\d+):assumed-role/([^/]+)/.+", principal)
    user = re.fullmatch(r"arn:([^:]+):iam::(\d+):.+", principal)
    found = session or user
    if session:
        names.add(f"arn:{session[1]}:iam::{session[2]}:role/{session[3]}")
    if found:
        names.update({f"arn:{found[1]}:iam::{found[2]}:root", found[2]})
    return names


def signed_path(path: str) -> str:
    """The path and query as the client signed them. moto checks a signature against the URL as Werkzeug gives
    it back, with %2F and UTF-8 in the query decoded; SigV4 signs every query key and value percent-encoded
    (only RFC 3986's unreserved characters kept), so every listing under a prefix (`prefix=a%2Fb%2F`, what
    the runtime and `results` do) failed with SignatureDoesNotMatch, which AWS never answers to it."""
    base, mark, query = path.partition("?")
    if not mark:
        return path
    pairs = []
    for pair in query.split("&"):
        key, equals, value = pair.partition("=")
        pairs.append(quote(unquote(key), safe="-_.~") + equals + quote(unquote(value), safe="-_.~"))
    return base + "?" + "&".join(pairs)


def install() -> None:
    """Patch moto's policy evaluation as the module docstring says (in the daemon's process only)."""
    from moto.iam.access_control import IAMPolicyStatement, IAMRequestBase

    def match(pattern: str, string: str) -> Any:
        return _glob(pattern).match(string)

    def check_element_matches(self: Any, element: str, value: str) -> bool:
        if element == "Resource" and value == "*":
            return True  # moto did not name the resource (services other than S3, SQS, IAM, STS): action only
        patterns = self._statement[element]
        return any(_glob(p).match(value) for p in ([patterns] if isinstance(patterns, str) else patterns))

    def check_principal(self: Any, principal: str) -> bool:
        expected = self._statement.get("Principal")
        if not expected or expected == "*":
            return True
        aws = expected.get("AWS") if isinstance(expected, dict) else None
        if aws is None:
            return False  # only a service (ec2.amazonaws.com, ...) may: not a user nor a session
        allowed = {aws} if isinstance(aws, str) else set(aws)
        return "*" in allowed or bool(_principals(principal) & allowed)

    IAMPolicyStatement._match = staticmethod(match)  # type: ignore[method-assign]
    IAMPolicyStatement._check_element_matches = check_element_matches  # type: ignore[method-assign,assignment]
    IAMPolicyStatement._check_principal = check_principal  # type: ignore[method-assign]

    original_request = IAMRequestBase._create_aws_request
    if not getattr(original_request, "signed_path", False):  # installed once, whatever calls install() again

        def create_aws_request(self: Any) -> Any:
            self._path = signed_path(self._path)
            return original_request(self)

        create_aws_request.signed_path = True  # type: ignore[attr-defined]
        IAMRequestBase._create_aws_request = create_aws_request  # type: ignore[method-assign]
    _refuse_sessions_of_deleted_roles()
    _auth_errors_in_json_for_json_clients()
    _audit_instance_ends()


def _refuse_sessions_of_deleted_roles() -> None:
    """STS credentials of a role that has since been deleted: refused as an invalid token (403:
    InvalidClientTokenId; S3 InvalidAccessKeyId; EC2 AuthFailure), where moto looked the role up while evaluating
    the request and answered 500."""
    from moto.iam.access_control import AssumedRoleAccessKey, CreateAccessKeyFailure
    from moto.iam.exceptions import NotFoundException

    original = AssumedRoleAccessKey.__init__
    if getattr(original, "deleted_role", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            self.backend.get_role(self._owner_role_name)
        except NotFoundException:
            raise CreateAccessKeyFailure(reason="InvalidId") from None

    __init__.deleted_role = True  # type: ignore[attr-defined]
    AssumedRoleAccessKey.__init__ = __init__  # type: ignore[method-assign]


def _auth_errors_in_json_for_json_clients() -> None:
    """moto writes its authentication and authorisation errors (InvalidClientTokenId, AccessDenied, ...) as XML
    whatever the protocol, so a JSON-protocol client (SQS, SSM, ECR, as the AWS CLI and boto3 call them) read a
    bare 403 with no code; AWS answers those in JSON, `__type` naming the code."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import JsonRESTError, _RESTError

    original = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action
    if getattr(original, "json_errors", False):
        return

    def authenticate(self: Any, resource: str = "*") -> None:
        try:
            original(self, resource)
        except _RESTError as error:
            if isinstance(error, JsonRESTError) or "json" not in str(self.headers.get("Content-Type", "")):
                raise
            raise error.to_json() from None

    authenticate.json_errors = True  # type: ignore[attr-defined]
    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = authenticate  # type: ignore[method-assign]


# Calls that end an instance or may make a group end one: the daemon's log names who made each (AWS's CloudTrail
# would), so an instance that went away mid-test can be traced to its caller.
AUDITED = frozenset({"TerminateInstances", "StopInstances", "DeleteAutoScalingGroup", "SetDesiredCapacity",
                     "UpdateAutoScalingGroup", "TerminateInstanceInAutoScalingGroup", "DetachInstances"})


def _audit_instance_ends() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin

    original = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action
    if getattr(original, "audited", False):
        return

    def authenticate(self: Any, resource: str = "*") -> None:
        original(self, resource)
        action = (self.querystring.get("Action") or [""])[0] if isinstance(self.querystring, dict) else ""
        if action in AUDITED:
            key = re.search(r"Credential=([A-Z0-9]+)/", str(self.headers.get("Authorization", "")))
            named = {k: v for k, v in self.querystring.items()
                     if k.startswith(("InstanceId", "AutoScalingGroupName", "DesiredCapacity", "MinSize", "MaxSize"))}
            log.info("audit: %s by %s %s", action, key.group(1) if key else "?", named)

    authenticate.audited = True  # type: ignore[attr-defined]
    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = authenticate  # type: ignore[method-assign]


def create_admin(account: str) -> tuple[str, str]:
    """The administrator user the CLI side signs as; returns its (access key id, secret)."""
    from moto.iam.models import iam_backends

    iam = iam_backends[account]["aws"]
    if ADMIN_USER not in iam.users:
        iam.create_user("us-east-1", ADMIN_USER)
        iam.put_user_policy(ADMIN_USER, "administrator", json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(ADMIN_USER)
    log.info("the CLI side signs as user %s (access key %s)", ADMIN_USER, key.access_key_id)
    return key.access_key_id, key.secret_access_key


def enforce() -> None:
    """From now on every request to moto is authenticated and authorised."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0


class RoleCredentials:
    """What IMDS serves at iam/security-credentials/ROLE: STS credentials of that role for one instance,
    issued the way EC2 does (by the service, in-process: no caller needs sts:AssumeRole) and renewed
    `REFRESH_BEFORE_S` before they expire."""

    def __init__(self, account: str, region: str, instance_id: str, duration: int = CREDENTIALS_S) -> None:
        self.account, self.region, self.instance_id, self.duration = account, region, instance_id, duration
        self._current: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __call__(self, role: str) -> dict[str, Any]:
        with self._lock:
            now = datetime.now(timezone.utc)
            if (self._current is None or self._current["role"] != role
                    or self._current["expiration"] - now < timedelta(seconds=REFRESH_BEFORE_S)):
                self._current = self._issue(role, now)
            return dict(self._current)

    def _issue(self, role: str, now: datetime) -> dict[str, Any]:
        from moto.sts.models import sts_backends

        arn = f"arn:aws:iam::{self.account}:role/{role}"
        assumed = sts_backends[self.account]["aws"].assume_role(
            region_name=self.region, role_session_name=self.instance_id, role_arn=arn, policy="",
            duration=self.duration, external_id="")
        log.info("%s: issued credentials of role %s (%s)", self.instance_id, role, assumed.access_key_id)
        return {"role": role, "AccessKeyId": assumed.access_key_id, "SecretAccessKey": assumed.secret_access_key,
                "Token": assumed.session_token, "LastUpdated": now,
                "expiration": now + timedelta(seconds=self.duration)}
