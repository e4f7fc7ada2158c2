#!/bin/bash
# submitter boot script (EC2 user-data). The same bytes run on AWS and in the sandbox; only the standard
# variables AWS_ENDPOINT_URL and AWS_EC2_METADATA_SERVICE_ENDPOINT differ there.
set -uo pipefail

SUBMISSION={{SUBMISSION}}
BUCKET={{BUCKET}}
PREFIX={{PREFIX}}
GROUP={{GROUP}}
MODE={{MODE}}                        # agent: a pool worker; cache: the warm image cache's builder (docs/image.md)
DEADMAN_MINUTES={{DEADMAN_MINUTES}}
RUNTIME_URI={{RUNTIME_URI}}          # the instance runtime (runtime.pyz), staged by submit
RUNTIME_SHA256={{RUNTIME_SHA256}}    # its hash: only these bytes run here
REPORTS_URI={{REPORTS_URI}}          # where this host reports why it gave up
BUCKET_OWNER={{BUCKET_OWNER}}        # the bucket's account: S3 refuses a request naming it if another owns BUCKET
# shellcheck disable=SC2016  # python3 source, meant literally: nothing in it is for the shell to expand
BOOT_REPORT={{BOOT_REPORT}}          # python3 source (boot_report.py): give_up's report on a host without the AWS CLI

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

# Report why this host gives up, leave the group without a replacement, and power off. The report goes to S3
# with the AWS CLI, or, when there is none (the AMI has none and it could not be installed), with python3's
# standard library (boot_report.py); either way the reason is in the console output (cloud-init's log).
REPORT="${TMPDIR:-/tmp}/submitter-boot.json"
give_up() {
  echo "boot failed: $1"
  printf '{"instance_id": "%s", "state": "%s", "reason": "%s", "time": "%s"}\n' \
    "$INSTANCE_ID" {{BOOT_FAILED}} "$(printf '%s' "$1" | tr -d '\\\000-\037' | tr '"' "'")" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$REPORT"  # the reason made safe for a JSON string
  local key="${REPORTS_URI#s3://"$BUCKET"/}$INSTANCE_ID.json"
  if command -v aws >/dev/null; then
    aws s3api put-object --bucket "$BUCKET" --key "$key" --body "$REPORT" \
      ${BUCKET_OWNER:+--expected-bucket-owner "$BUCKET_OWNER"} >/dev/null || true
    aws autoscaling terminate-instance-in-auto-scaling-group --instance-id "$INSTANCE_ID" \
      --should-decrement-desired-capacity >/dev/null 2>&1 || true
  else
    python3 -c "$BOOT_REPORT" "$IMDS" "$REGION" "$BUCKET" "$key" "$BUCKET_OWNER" "$INSTANCE_ID" \
      "$REPORT" 2>&1 | tail -n 3 || true
  fi
  shutdown -h now
  exit 1
}

# Make COMMAND available, from the distribution's PACKAGE when the image lacks it (Amazon Linux 2023: dnf).
# Bounded: 3 tries of at most 100 s each; a repository that has no such package is not asked again.
install_tool() {  # COMMAND PACKAGE
  local i out="" rc=0
  command -v "$1" >/dev/null && return 0
  command -v dnf >/dev/null || { INSTALL_ERROR="no $1 and no dnf on this image"; return 1; }
  for i in 1 2 3; do
    out=$(timeout 100 dnf install -y -q "$2" 2>&1) && rc=0 || rc=$?
    if [ "$rc" = 0 ] && command -v "$1" >/dev/null; then
      echo "installed $2 in $((SECONDS - INSTALL_START)) s"
      return 0
    fi
    [ "$rc" = 124 ] && out="dnf install $2 timed out after 100 s"
    [ "$rc" = 0 ] && out="dnf installed $2 but there is still no $1 on PATH"
    case "$out" in *"No match for argument"*|*"Unable to find a match"*) break ;; esac
    if [ "$i" -lt 3 ]; then sleep $((i * 5)); fi
  done
  INSTALL_ERROR=$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d' | tail -n 1)
  return 1
}

# A warm cache (docs/image.md) carries the packages of the install step too. Its builder (MODE=cache) downloads
# them into CACHE_PACKAGES_HOST and installs them from there (which proves the set installs on this image); its
# runtime copies them onto the volume. A worker whose data volume was restored from the snapshot mounts it here
# and installs them from it with every repository disabled: no metadata, no download. If that fails (the image
# changed since), the repositories below still serve.
CACHE_PACKAGES_HOST={{CACHE_PACKAGES_HOST}}
WORK={{WORK_BASE}}/"$INSTANCE_ID"
VOLUME_PACKAGES="$WORK/"{{CACHE_PACKAGES}}
DATA_DEVICES={{DATA_DEVICES}}        # the launch template's data volume, by the names a kernel may give it
missing_packages() {  # the packages of the tools this image lacks
  local pair out=""
  for pair in aws=awscli-2 mkfs.ext4=e2fsprogs; do
    command -v "${pair%%=*}" >/dev/null || out="$out ${pair#*=}"
  done
  printf '%s' "${out# }"
}
install_files() {  # DIR: every package file in DIR, no repository asked, each file's signature checked
  timeout 100 dnf install -y -q --disablerepo='*' --setopt=localpkg_gpgcheck=True "$1"/*.rpm 2>&1 | tail -n 1
  [ -z "$(missing_packages)" ]
}
mount_volume() {  # the data volume at $WORK when it has a filesystem (restored); a blank one is the runtime's
  local device real
  for device in $DATA_DEVICES; do
    [ -e "$device" ] || continue
    real=$(readlink -f "$device")
    [ -n "$(blkid -o value -s TYPE "$real" 2>/dev/null)" ] || return 1
    mkdir -p "$WORK" && { mountpoint -q "$WORK" || mount "$real" "$WORK"; }
    return
  done
  return 1
}

command -v python3 >/dev/null || give_up "python3 is not on this image"
command -v docker >/dev/null || give_up "docker is not on this image"
# The ECS-optimized AL2023 AMIs are built from the AL2023 minimal AMI, which has no AWS CLI (docs/decisions.md,
# "Instance AMI"); the agent runs `aws` for every S3, SQS, SSM and ECR call. e2fsprogs is installed only if absent.
INSTALL_START=$SECONDS
WANTED=$(missing_packages)
if [ -n "$WANTED" ] && command -v dnf >/dev/null; then
  if [ "$MODE" = cache ]; then
    # shellcheck disable=SC2086  # WANTED is a list of package names
    if mkdir -p "$CACHE_PACKAGES_HOST" \
        && timeout 100 dnf install -y -q --downloadonly --downloaddir="$CACHE_PACKAGES_HOST" $WANTED >/dev/null 2>&1 \
        && install_files "$CACHE_PACKAGES_HOST"; then
      echo "installed $WANTED from their downloaded packages, kept for the warm cache, in $((SECONDS - INSTALL_START)) s"
    else
      rm -rf "$CACHE_PACKAGES_HOST"
      echo "could not keep the packages ($WANTED) for the warm cache; installing from the repositories"
    fi
  elif mount_volume && [ -d "$VOLUME_PACKAGES" ]; then
    if install_files "$VOLUME_PACKAGES"; then
      echo "installed $WANTED from the warm cache's packages in $((SECONDS - INSTALL_START)) s"
    else
      echo "the warm cache's packages did not install here; installing from the repositories"
    fi
  fi
fi
install_tool aws awscli-2 || give_up "cannot install the AWS CLI: ${INSTALL_ERROR:-unknown error}"
install_tool mkfs.ext4 e2fsprogs \
  || give_up "cannot install e2fsprogs (mkfs.ext4, for the data volume): ${INSTALL_ERROR:-unknown error}"
# Parallel layer downloads before the agent pulls: dockerd fetches 3 layers at a time by default, each one HTTP
# stream from ECR; more streams fill more of a big instance's network (docs/image.md). A reload (SIGHUP) applies
# max-concurrent-downloads to the running engine (moby daemon/reload.go). Only where systemd runs the engine: a
# sandbox host shares the machine's engine, which is not its to change. Failing this only keeps docker's default.
DOCKERD_CONFIG="${DOCKERD_CONFIG:-/etc/docker/daemon.json}"  # a test points it elsewhere
PULL_STREAMS=10
if command -v systemctl >/dev/null && systemctl is-active --quiet docker; then
  if python3 -c 'import json, os, sys
path, conf = sys.argv[1], {}
if os.path.exists(path):
    with open(path) as f:
        conf = json.load(f)
conf["max-concurrent-downloads"] = int(sys.argv[2])
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path + ".new", "w") as f:
    json.dump(conf, f, indent=2)
os.replace(path + ".new", path)' "$DOCKERD_CONFIG" "$PULL_STREAMS" && systemctl reload docker; then
    echo "docker: $PULL_STREAMS concurrent layer downloads"
  else
    echo "docker: could not set $PULL_STREAMS concurrent layer downloads; pulling with docker's default"
  fi
fi
[ -n "$BUCKET_OWNER" ] || give_up "no account id for the bucket owner"
mkdir -p /opt/submitter
RUNTIME=/opt/submitter/runtime.pyz
# s3api, not `aws s3 cp`: the high-level commands take no --expected-bucket-owner (docs/decisions.md)
retry aws s3api get-object --bucket "$BUCKET" --key "${RUNTIME_URI#s3://"$BUCKET"/}" \
  --expected-bucket-owner "$BUCKET_OWNER" "$RUNTIME" >/dev/null \
  || give_up "cannot fetch $RUNTIME_URI from a bucket of account $BUCKET_OWNER"
echo "$RUNTIME_SHA256  $RUNTIME" | sha256sum -c --quiet - \
  || give_up "$RUNTIME_URI is not the runtime this submission was planned with (SHA-256 mismatch)"
echo "runtime $RUNTIME_SHA256 verified"

python3 "$RUNTIME" "$MODE" --submission "$SUBMISSION" --bucket "$BUCKET" --prefix "$PREFIX" \
  --group "$GROUP" --instance-id "$INSTANCE_ID" --region "$REGION" --bucket-owner "$BUCKET_OWNER"
status=$?
echo "agent exited with $status"
# Leave the group for good only when the agent says so: 0 the queue is drained, 1 this image or volume
# cannot work, 3 the agent failed. Anything else ({{EXIT_RETRY}} a spot notice, or killed by the host's own
# shutdown) means work may remain: power off but stay counted, so the group starts a replacement that resumes it.
case "$MODE:$status" in
  agent:0|agent:1|agent:3)
    aws autoscaling terminate-instance-in-auto-scaling-group --instance-id "$INSTANCE_ID" \
      --should-decrement-desired-capacity >/dev/null 2>&1 || true ;;
esac
shutdown -h now
