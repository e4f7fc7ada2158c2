#!/bin/bash
# PID 1 of a simulated host (the sandbox's stand-in for an EC2 instance booting).
# Does what cloud-init does with a script user-data: fetch it from IMDS (the same IMDSv2 calls, through
# AWS_EC2_METADATA_SERVICE_ENDPOINT), store it under /var/lib/cloud/instance, run it once with its output
# in /var/log/cloud-init-output.log, then keep the host up until it is shut down (SIGTERM to PID 1).
set -u

trap 'exit 0' TERM INT
IMDS="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254/}"
IMDS="${IMDS%/}"
LOG=/var/log/cloud-init-output.log
INSTANCE_DIR=/var/lib/cloud/instance
mkdir -p "$INSTANCE_DIR/scripts" /var/log
start=$(date +%s)

log() { printf '%s\n' "$*" | tee -a "$LOG"; }

log "Cloud-init v. submitter-sandbox running 'modules:final' at $(date -u '+%a, %d %b %Y %H:%M:%S +0000')."
token=""
for _ in $(seq 1 30); do
    token=$(curl -sf -X PUT "$IMDS/latest/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600') && break
    sleep 1
done
raw="$INSTANCE_DIR/user-data.txt"
if [ -n "$token" ] && curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/user-data" -o "$raw"; then
    # cloud-init accepts gzip-compressed user-data
    if gzip -t "$raw" 2>/dev/null; then
        gzip -dc "$raw" >"$raw.i"
    else
        cp "$raw" "$raw.i"
    fi
    if [ "$(head -c 2 "$raw.i")" = '#!' ]; then
        script="$INSTANCE_DIR/scripts/part-001"
        cp "$raw.i" "$script"
        chmod 700 "$script"
        # In the background so that a shutdown from the script ends PID 1 at once (a trap only runs
        # while bash waits in `wait`, not while a foreground command runs).
        (cd / && exec "$script") > >(tee -a "$LOG") 2>&1 &
        wait $!
        rc=$?
        if [ "$rc" != 0 ]; then
            log "$(date -u '+%Y-%m-%d %H:%M:%S,000') - util.py[WARNING]: Failed running $script [$rc]"
            log "$(date -u '+%Y-%m-%d %H:%M:%S,000') - cc_scripts_user.py[WARNING]: Failed to run module scripts-user"
        fi
    else
        log "user-data is not a script (no #!): nothing to run"
    fi
else
    log "no user-data (IMDS $IMDS/latest/user-data): nothing to run"
fi
log "Cloud-init v. submitter-sandbox finished at $(date -u '+%a, %d %b %Y %H:%M:%S +0000'). Datasource DataSourceEc2.  Up $(($(date +%s) - start)) seconds"

# Stay up, as a host does after boot, until shutdown/poweroff signals PID 1.
while true; do
    sleep 3600 &
    wait $!
done
