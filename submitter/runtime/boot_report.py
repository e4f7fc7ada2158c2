"""The boot script's report of why a host gave up, for a host with no AWS CLI (the AMI has none and it could not
be installed): python3's standard library only, signed with Signature Version 4 as the instance role.

boot.sh inlines this source and runs `python3 -c SOURCE IMDS REGION BUCKET KEY OWNER INSTANCE REPORT`: it
puts REPORT at s3://BUCKET/KEY, then takes the instance out of its Auto Scaling group (decrementing the desired
capacity, so no replacement boots into the same failure). AWS_ENDPOINT_URL, when set, is where both requests go.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request


def sign(method: str, url: str, region: str, service: str, body: bytes, headers: dict[str, str],
         creds: dict[str, str], amz_date: str) -> dict[str, str]:
    """`headers` plus the SigV4 ones (host, dates, token, payload hash, Authorization) for this request."""
    parts = urllib.parse.urlsplit(url)
    payload = hashlib.sha256(body).hexdigest()
    out = dict(headers, Host=parts.netloc, **{"X-Amz-Date": amz_date, "X-Amz-Content-SHA256": payload})
    if creds.get("Token"):
        out["X-Amz-Security-Token"] = creds["Token"]
    names = sorted(out, key=str.lower)
    canonical = "\n".join([method, parts.path or "/", parts.query,
                           "".join(f"{n.lower()}:{' '.join(str(out[n]).split())}\n" for n in names),
                           ";".join(n.lower() for n in names), payload])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + creds["SecretAccessKey"]).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds['AccessKeyId']}/{scope}, "
                            f"SignedHeaders={';'.join(n.lower() for n in names)}, Signature={signature}")
    return out


def endpoint(service: str, region: str, bucket: str = "") -> str:
    custom = os.environ.get("AWS_ENDPOINT_URL", "").rstrip("/")
    if custom:
        return f"{custom}/{bucket}" if bucket else custom
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{bucket}.s3.{region}.{suffix}" if bucket else f"https://{service}.{region}.{suffix}"


def send(method: str, url: str, region: str, service: str, body: bytes, headers: dict[str, str],
         creds: dict[str, str]) -> int:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    request = urllib.request.Request(url, data=body, method=method,
                                     headers=sign(method, url, region, service, body, headers, creds, now))
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:  # AWS's own words: <Code> and <Message> of the error document
        text = exc.read().decode(errors="replace")
        said = [re.search(f"<{tag}>(.*?)</{tag}>", text, re.S) for tag in ("Code", "Message")]
        raise RuntimeError(f"HTTP {exc.code} " + ": ".join(m.group(1) for m in said if m)) from None


def credentials(imds: str) -> dict[str, str]:
    """The instance role's credentials, from IMDSv2 (a token first: the launch template requires it)."""
    put = urllib.request.Request(f"{imds}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    with urllib.request.urlopen(put, timeout=5) as answer:
        token = answer.read().decode()

    def get(path: str) -> str:
        request = urllib.request.Request(f"{imds}/latest/meta-data/iam/security-credentials/{path}",
                                         headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(request, timeout=5) as answer:
            return str(answer.read().decode())

    return dict(json.loads(get(get("").split()[0])))


def main(argv: list[str]) -> int:
    imds, region, bucket, key, owner, instance, report = argv
    try:
        creds = credentials(imds)
    except Exception as exc:  # no role, no IMDS: the console output is all that is left
        print(f"boot failure not reported: no instance credentials: {exc}")
        return 1
    with open(report, "rb") as f:
        body = f.read()
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if owner:
        headers["x-amz-expected-bucket-owner"] = owner
    url = endpoint("s3", region, bucket) + "/" + urllib.parse.quote(key, safe="/~")
    failed: str | None = None
    try:
        send("PUT", url, region, "s3", body, headers, creds)
        print(f"boot failure reported to s3://{bucket}/{key}")
    except Exception as exc:  # still leave the group; the console output keeps the reason
        failed = f"boot failure not reported to S3: {exc}"
        print(failed)
    form = urllib.parse.urlencode({"Action": "TerminateInstanceInAutoScalingGroup", "Version": "2011-01-01",
                                   "InstanceId": instance, "ShouldDecrementDesiredCapacity": "true"}).encode()
    try:
        send("POST", endpoint("autoscaling", region) + "/", region, "autoscaling", form,
             {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, creds)
        print("left the Auto Scaling group (desired capacity decremented)")
    except Exception as exc:  # not in a group (or not allowed): powering off is all that is left
        print(f"did not leave an Auto Scaling group: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
