#!/usr/bin/env bash
# A CI job that tracks itself as a projctl project.
#
# It creates a project for the run, moves its status along as the steps pass,
# waits (bounded) until the "completed" event has really been broadcast, and
# cleans up after itself even when a step fails.
#
#   PROJCTL_DB=/tmp/ci-projects.json bash examples/ci.sh
set -euo pipefail

# If no server runs for this database yet, the first command starts one in the background:
# then this job stops it at the end, so none lingers on a self-hosted runner.
if projctl server status >/dev/null; then ours=false; else ours=true; fi

run_name="${CI_PIPELINE_NAME:-example pipeline} #${CI_RUN_NUMBER:-1}"
id=$(projctl create "$run_name" --type ci --owner "${CI_USER:-ci-bot}" \
    --description "started $(date -u +%Y-%m-%dT%H:%M:%SZ)")
echo "tracking this run as $id"

# Whatever happens below, leave no project (and no server of ours) behind.
cleanup() {
    projctl delete "$id" --missing-ok --quiet
    if [ "$ours" = true ]; then projctl server stop >/dev/null; fi
}
trap cleanup EXIT

# Wait for the completion event in the background. --since 0 replays the journal
# first, so the event counts even if it is broadcast before the watcher connects.
projctl watch --json --since 0 --project "$id" --event project_updated \
    --status completed --count 1 --timeout 60 >completed.jsonl &
waiter=$!

projctl update "$id" --status in_progress --quiet
for step in lint test package; do
    echo "step: $step"        # a real job would run the step here
    projctl update "$id" --description "passed: $step" --quiet
done
projctl update "$id" --status completed --quiet

if wait "$waiter"; then
    echo "completion event received: $(cut -c1-80 completed.jsonl)"
else
    echo "no completion event within 60s" >&2
    exit 1
fi
rm -f completed.jsonl
