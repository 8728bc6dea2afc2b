#!/usr/bin/env bash
# A CI job that tracks itself as a projctl project.
#
# It creates a project for the run, moves its status along as the steps pass,
# emits the test step's results as a tests_run event that a second job waits for,
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

# A second job (a deploy, a report) waits for this run's test results: the tests_run event.
projctl watch --json --since 0 --project "$id" --event tests_run --count 1 --timeout 60 \
    >tests_run.jsonl &
tests_waiter=$!

projctl update "$id" --status in_progress --quiet
for step in lint test package; do
    echo "step: $step"        # a real job would run the step here
    projctl update "$id" --description "passed: $step" --quiet
    if [ "$step" = test ]; then
        # The step's results, for whoever waits on them (docs/events.md: tests_run).
        projctl emit "$id" tests_run --quiet \
            --data '{"passed": 41, "failed": 0, "skipped": 2, "duration_s": 12.5}'
    fi
done
projctl update "$id" --status completed --quiet

if wait "$tests_waiter"; then
    echo "tests_run event received: $(cut -c1-80 tests_run.jsonl)"
else
    echo "no tests_run event within 60s" >&2
    exit 1
fi
rm -f tests_run.jsonl

if wait "$waiter"; then
    echo "completion event received: $(cut -c1-80 completed.jsonl)"
else
    echo "no completion event within 60s" >&2
    exit 1
fi
rm -f completed.jsonl
