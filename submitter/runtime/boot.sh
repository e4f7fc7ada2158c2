#!/bin/bash
# submitter boot script (EC2 user-data). The same bytes run on AWS and in the sandbox; only the standard
# variables AWS_ENDPOINT_URL and AWS_EC2_METADATA_SERVICE_ENDPOINT differ there.
set -uo pipefail

SUBMISSION={{SUBMISSION}}
BUCKET={{BUCKET}}
PREFIX={{PREFIX}}
GROUP={{GROUP}}
DEADMAN_MINUTES={{DEADMAN_MINUTES}}
RUNTIME_URI={{RUNTIME_URI}}          # the instance runtime (runtime.pyz), staged by submit
RUNTIME_SHA256={{RUNTIME_SHA256}}    # its hash: only these bytes run here
REPORTS_URI={{REPORTS_URI}}          # where this host reports why it gave up
BUCKET_OWNER={{BUCKET_OWNER}}        # the bucket's account: S3 refuses a request naming it if another owns BUCKET

# Dead-man switch before anything else: whatever happens below, this host stops billing.
shutdown -h "+${DEADMAN_MINUTES}" "submitter: max_runtime reached" || true

IMDS="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}"
IMDS="${IMDS%/}"
TOKEN=""

imds() {
  if [ -z "$TOKEN" ]; then
    TOKEN=$(curl -sf -m 5 -X PUT "$IMDS/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 21600") || return 1
  fi
  curl -sf -m 5 -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/latest/$1"
}

retry() {
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    "$@" && return 0
    sleep "$i"
  done
  return 1
}

INSTANCE_ID=$(retry imds meta-data/instance-id) || { echo "no instance metadata"; shutdown -h now; exit 1; }
REGION=$(retry imds meta-data/placement/region) || { echo "no region in instance metadata"; shutdown -h now; exit 1; }
export AWS_DEFAULT_REGION="$REGION" AWS_REGION="$REGION"
if [ -z "$BUCKET_OWNER" ]; then  # not rendered (a plan made without credentials): this instance's own account
  BUCKET_OWNER=$(imds dynamic/instance-identity/document | sed -n 's/.*"accountId" *: *"\([0-9]*\)".*/\1/p')
fi

# Report why this host gives up, leave the group without a replacement, and power off.
give_up() {
  echo "boot failed: $1"
  printf '{"instance_id": "%s", "state": "%s", "reason": "%s", "time": "%s"}\n' \
    "$INSTANCE_ID" {{BOOT_FAILED}} "${1//\"/\'}" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > /tmp/submitter-boot.json
  aws s3 cp --only-show-errors /tmp/submitter-boot.json "$REPORTS_URI$INSTANCE_ID.json" || true
  aws autoscaling terminate-instance-in-auto-scaling-group --instance-id "$INSTANCE_ID" \
    --should-decrement-desired-capacity >/dev/null 2>&1 || true
  shutdown -h now
  exit 1
}

command -v python3 >/dev/null || give_up "python3 is not on this image"
command -v docker >/dev/null || give_up "docker is not on this image"
mkdir -p /opt/submitter
RUNTIME=/opt/submitter/runtime.pyz
[ -n "$BUCKET_OWNER" ] || give_up "no account id for the bucket owner"
# s3api, not `aws s3 cp`: the high-level commands take no --expected-bucket-owner (docs/decisions.md)
retry aws s3api get-object --bucket "$BUCKET" --key "${RUNTIME_URI#s3://"$BUCKET"/}" \
  --expected-bucket-owner "$BUCKET_OWNER" "$RUNTIME" >/dev/null \
  || give_up "cannot fetch $RUNTIME_URI from a bucket of account $BUCKET_OWNER"
echo "$RUNTIME_SHA256  $RUNTIME" | sha256sum -c --quiet - \
  || give_up "$RUNTIME_URI is not the runtime this submission was planned with (SHA-256 mismatch)"
echo "runtime $RUNTIME_SHA256 verified"

python3 "$RUNTIME" agent --submission "$SUBMISSION" --bucket "$BUCKET" --prefix "$PREFIX" \
  --group "$GROUP" --instance-id "$INSTANCE_ID" --region "$REGION" --bucket-owner "$BUCKET_OWNER"
status=$?
echo "agent exited with $status"
# Leave the group for good only when the agent says so: 0 the queue is drained, 1 this image or volume
# cannot work, 3 the agent failed. Anything else ({{EXIT_RETRY}} a spot notice, or killed by the host's own
# shutdown) means work may remain: power off but stay counted, so the group starts a replacement that resumes it.
case "$status" in
  0|1|3)
    aws autoscaling terminate-instance-in-auto-scaling-group --instance-id "$INSTANCE_ID" \
      --should-decrement-desired-capacity >/dev/null 2>&1 || true ;;
esac
shutdown -h now
