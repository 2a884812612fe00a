#!/usr/bin/env bash
# The main job, end to end, on embedded defaults: a local 3-node devnet, the local busybox
# image, a container that writes outputs, results fetched and verified with `bacnode get`.
# Run scripts/setup.sh once first (packages, dockerd, the image).
set -euo pipefail
cd "$(dirname "$0")/.."

results=${1:-results}

echo "== starting a 3-node devnet on 127.0.0.1" >&2
eval "$(bash scripts/devnet.sh up 3 | grep '^export ')"
bacnode() { python3 -m cli.main "$@"; }

echo "== the network" >&2
bacnode node list

echo "== running a job somewhere on it" >&2
job_id=$(bacnode docker run --id-only --wait -p local busybox -- \
    sh -c 'echo "hello from $(hostname)"; date -u > /outputs/when.txt; echo data > /outputs/a.txt')
echo "job: $job_id" >&2

bacnode list --id-filter "$job_id" --wide
bacnode describe "$job_id" --json | python3 -c \
    'import json, sys; d = json.load(sys.stdin); e = d["State"]["Executions"][0]; print("state:", d["State"]["State"], "| ran on:", e["NodeID"], "| stdout:", e["RunOutput"]["stdout"].strip())'

echo "== fetching and verifying its results into $results/" >&2
rm -rf "$results" && mkdir -p "$results"
bacnode get "$job_id" --output-dir "$results"
ls -1 "$results" "$results/outputs"
echo "== done; stop the devnet with: bash scripts/devnet.sh down" >&2
