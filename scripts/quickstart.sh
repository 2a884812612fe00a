#!/usr/bin/env bash
# The main job, end to end, on embedded defaults: a local S3 server (SeaweedFS) holding a
# stand-in for the tutorial's public bucket, a local 3-node devnet, the local busybox image.
# It runs the reference tutorial's job as written (S3 objects in, copied to /outputs, results
# published to IPFS, the default), fetches and verifies them with `bacnode get`, prints the
# CID with the tutorial's jq command, then runs it again publishing to S3 as one .tar.gz.
# Run scripts/setup.sh once first (packages, dockerd, the image).
set -euo pipefail
cd "$(dirname "$0")/.."

# The interpreter scripts/setup.sh installed bacnode into.
PY=.venv/bin/python
[[ -x $PY ]] || { echo "quickstart: $PY is missing: run 'bash scripts/setup.sh' first" >&2; exit 1; }
# boto3 asks the cloud metadata address for credentials when none are configured; nothing
# here sends traffic off this machine.
export AWS_EC2_METADATA_DISABLED=true

results=${1:-results}
state=${BACNODE_QUICKSTART_DIR:-/tmp/bacnode-quickstart}
mkdir -p "$state"
bacnode() { "$PY" -m cli.main "$@"; }

# Ours, and still running: a pid file outlives its server (`kill` leaves it behind), and
# its pid may since have gone to any other process.
s3_running() {
    local pid
    pid=$(cat "$state/s3.pid" 2>/dev/null) || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-m scripts.services s3 "
}

echo "== starting a local S3 server (SeaweedFS) on 127.0.0.1" >&2
if s3_running; then
    echo "   already running (pid $(cat "$state/s3.pid"))" >&2
else
    rm -f "$state/s3.env"
    nohup "$PY" -m scripts.services s3 --dir "$state/s3" >"$state/s3.env" 2>"$state/s3.log" &
    echo $! >"$state/s3.pid"
    for _ in $(seq 120); do
        grep -q '^export AWS_ENDPOINT_URL_S3=' "$state/s3.env" 2>/dev/null && break
        kill -0 "$(cat "$state/s3.pid")" 2>/dev/null || { tail "$state/s3.log" >&2; exit 1; }
        sleep 0.5
    done
fi
eval "$(grep '^export ' "$state/s3.env")"

echo "== filling a stand-in for s3://noaa-goes16 and a results bucket" >&2
"$PY" - <<'PY'
import boto3

s3 = boto3.client("s3")
buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
for name in ("noaa-goes16", "results"):
    if name not in buckets:
        s3.create_bucket(Bucket=name)
s3.put_bucket_versioning(Bucket="results", VersioningConfiguration={"Status": "Enabled"})
prefix = "ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C01"
for i in range(3):
    s3.put_object(Bucket="noaa-goes16", Key=f"{prefix}_G16_s2000001120{i}000.nc",
                  Body=f"radiance scan {i}\n".encode() * 1000)
s3.put_object(Bucket="noaa-goes16", Key="ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C02_x.nc",
              Body=b"another channel, not matched")
PY

echo "== starting a 3-node devnet on 127.0.0.1 (its nodes use that S3 server)" >&2
bash scripts/devnet.sh down >/dev/null 2>&1 || true
eval "$(bash scripts/devnet.sh up 3 | grep '^export ')"
bacnode node list

echo "== the tutorial's job as written: S3 objects in, copied to /outputs, results to IPFS" >&2
export JOB_ID=$(bacnode docker run \
    -i "s3://noaa-goes16/ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C01*:/inputs,opt=region=us-east-1" \
    --id-only --wait \
    busybox \
    -- sh -c "cp -r /inputs/* /outputs/")
echo "job: $JOB_ID" >&2
bacnode list --id-filter "${JOB_ID}" --wide
bacnode describe "${JOB_ID}" >/dev/null

echo "== fetching and verifying its results into $results/ (bitswap through node 1)" >&2
rm -rf "$results" && mkdir -p "$results"
bacnode get "$JOB_ID" --output-dir "$results"
ls -1 "$results/outputs"
echo "== its CID (kubo's CID for the same results directory)" >&2
bacnode describe "${JOB_ID}" --json \
| jq -r '.State.Executions[].PublishedResults.CID | select (. != null)'

echo "== the same job publishing to S3 instead, as one .tar.gz in a versioned bucket" >&2
s3_job=$(bacnode docker run \
    -i "s3://noaa-goes16/ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C01*:/inputs,opt=region=us-east-1" \
    -p 's3://results/run-{jobID},opt=compress=true' \
    --id-only --wait \
    busybox \
    -- sh -c "cp -r /inputs/* /outputs/")
bacnode job results "$s3_job"
rm -rf "$results-s3" && mkdir -p "$results-s3"
bacnode get "$s3_job" --output-dir "$results-s3"
ls -1 "$results-s3/outputs"
echo "== done. Stop everything with:" >&2
echo "   bash scripts/devnet.sh down; kill \$(cat $state/s3.pid)" >&2
