#!/usr/bin/env bash
# Fault drills (make faults): a throwaway stack on free ports, the four services and the ingress,
# then bench/faults.py: under a modest load (appends with part ids, SSE readers, waiters, session
# creates) it kills each service with SIGKILL and restarts it, restarts NATS, flushes Redis, stops
# and restarts ClickHouse and PostgreSQL, and after each drill checks that nothing acknowledged was
# lost or duplicated. Prints what each drill did and checked, then a table; non-zero exit on any
# failure. Nothing is built: the binaries come from SESSIONS_BIN_DIR (default .build/release when
# it holds them, else .build/debug).
#
#   FAULTS_ONLY=kill-realtime,restart-nats   run some drills (names: see bench/faults.py)
#   FAULTS_SECONDS=8                         load window per drill
#   FAULTS_TIMEOUT=900                       seconds before the whole run is stopped (a failure)
#   DRILL_KEEP=1                             keep the stack folder (logs, data) after the run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=scripts/drill-stack.sh
source "$ROOT/scripts/drill-stack.sh"

drill_traps

ulimit -n 65536 2>/dev/null || true
T0=$SECONDS
drill_up faults
ARGS=(--dir "$DRILL_DIR" --seconds "${FAULTS_SECONDS:-8}")
[[ -n ${FAULTS_ONLY:-} ]] && ARGS+=(--only "$FAULTS_ONLY")
status=0
# A stuck drill must not hold `make faults` forever.
timeout --signal=TERM --kill-after=10 "${FAULTS_TIMEOUT:-900}" \
    "$ROOT/.dev/venv/bin/python" -u "$ROOT/bench/faults.py" "${ARGS[@]}" &
CHILD=$!
wait "$CHILD" || status=$?
CHILD=
((status == 124)) && drill_say "stopped after FAULTS_TIMEOUT=${FAULTS_TIMEOUT:-900} s"
drill_say "finished in $((SECONDS - T0)) s (exit $status)"
exit "$status"
