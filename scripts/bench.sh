#!/usr/bin/env bash
# Benchmarks in release mode against a throwaway stack on free ports; prints a table per
# benchmark and writes JSON under bench/results/: raw engine baselines, the control plane, realtime,
# waitpoints and replication (lag and list latency); then one summary table (bench/summary.py).
# BENCH_ONLY=raw|control-plane|realtime|waitpoints|replication runs one of them; BENCH_SECONDS sets each phase's length.
# BENCH_DELIVERY_RUNS=N repeats the append -> SSE run N times back to back, each with the raw probe
# beside it, and counts the runs over the 10 ms target and how many of them the engine stalled in.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
export PYTHONPATH=$ROOT/bench${PYTHONPATH:+:$PYTHONPATH}
STACK=$ROOT/scripts/stack.sh
say() { printf '[bench] %s\n' "$*" >&2; }

DIR=
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
    if [[ -n $DIR ]]; then
        "$STACK" stop "$DIR" --purge >/dev/null 2>&1 || true
        rm -rf "$DIR"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A thousand SSE subscribers need more descriptors than the default 1024.
ulimit -n 65536 2>/dev/null || true
"$STACK" install
command -v wrk >/dev/null || {
    say "installing wrk"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
}
say "building in release mode"
swift build -c release
BIN=$(swift build -c release --show-bin-path)

DIR=$(mktemp -d "${TMPDIR:-/tmp}/sessions-bench.XXXXXX")
chmod 755 "$DIR"
"$STACK" start "$DIR" --ports free
# shellcheck source=/dev/null
source "$DIR/stack.env"

# Database pools of twice PostgreSQL's cores, the usual sizing: with 16 connections on these two
# cores, creates at c=32 had a p99 of about 100 ms instead of 40-55 ms, at the same rate.
start_service() { # name port
    SESSIONS_HTTP_PORT=$2 SESSIONS_LOG_LEVEL=warning SESSIONS_DATABASE_POOL_SIZE=4 \
        "$BIN/$1" >"$DIR/$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -20 "$DIR/$1.log"
    exit 1
}
read -r PORT REALTIME_PORT WAITPOINTS_PORT REPLICATOR_PORT < <("$STACK" ports 4)
start_service control-plane "$PORT"
start_service realtime "$REALTIME_PORT"
REALTIME_PID=${PIDS[1]}
start_service waitpoints "$WAITPOINTS_PORT"
start_service replicator "$REPLICATOR_PORT"
ENVIRONMENT=$("$BIN/control-plane" env create --organization bench --project bench | tail -1)
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$ENVIRONMENT" "$1"; }
KEY=$(field apiKey)

# Every server and service, NAME=PID, for the benchmarks that count what each spends.
processes() {
    local names=(control-plane realtime waitpoints replicator) list=() index server
    for index in "${!names[@]}"; do list+=("${names[$index]}=${PIDS[$index]}"); done
    for server in postgres nats clickhouse redis; do list+=("$server=$(<"$DIR/$server.pid")"); done
    (IFS=,; echo "${list[*]}")
}

# Before each benchmark (and each phase of one) the machine is brought to rest (benchlib.quiet):
# PostgreSQL's dirty buffers and the page cache written back, then under 15% of the CPUs busy.
quiet() { python3 -c 'import benchlib; benchlib.quiet()' >&2; }

mkdir -p bench/results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if [[ -z ${BENCH_ONLY:-} || $BENCH_ONLY == raw ]]; then
    quiet
    OUT=bench/results/raw-$STAMP.json
    say "raw engines: JetStream publish -> ordered consumer, Redis EVALSHA, ClickHouse insert"
    python3 bench/raw.py --nats "$SESSIONS_NATS_URL" --redis "$SESSIONS_REDIS_URL" \
        --clickhouse "$SESSIONS_CLICKHOUSE_URL" --bench "$BIN/sessions-bench" --seconds "${BENCH_SECONDS:-10}" \
        --output "$OUT"
    say "results: $OUT"
fi
if [[ -z ${BENCH_ONLY:-} || $BENCH_ONLY == control-plane ]]; then
    quiet
    OUT=bench/results/control-plane-$STAMP.json
    say "control plane: create and retrieve at concurrency 32 (wrk) vs raw PostgreSQL (pgbench)"
    python3 bench/control_plane.py --url "http://127.0.0.1:$PORT" --api-key "$KEY" \
        --database-url "$SESSIONS_DATABASE_URL" --concurrency 32 --seconds "${BENCH_SECONDS:-10}" --output "$OUT" \
        --processes "$(processes)"
    say "results: $OUT"
fi
if [[ -z ${BENCH_ONLY:-} || $BENCH_ONLY == realtime ]]; then
    quiet
    OUT=bench/results/realtime-$STAMP.json
    say "realtime: appends vs raw JetStream, SSE delivery, fan-out"
    python3 bench/realtime.py --url "http://127.0.0.1:$REALTIME_PORT" --control-plane "http://127.0.0.1:$PORT" \
        --api-key "$KEY" --nats "$SESSIONS_NATS_URL" --bench "$BIN/sessions-bench" --pid "$REALTIME_PID" \
        --seconds "${BENCH_SECONDS:-10}" --subscribers "${BENCH_SUBSCRIBERS:-1000}" \
        --delivery-runs "${BENCH_DELIVERY_RUNS:-1}" --output "$OUT"
    say "results: $OUT"
fi
if [[ -z ${BENCH_ONLY:-} || $BENCH_ONLY == waitpoints ]]; then
    quiet
    OUT=bench/results/waitpoints-$STAMP.json
    say "waitpoints: append -> completion -> long-poll with 1,000 pending waiters on 100 channels"
    python3 bench/waitpoints.py --realtime "http://127.0.0.1:$REALTIME_PORT" \
        --waitpoints "http://127.0.0.1:$WAITPOINTS_PORT" --control-plane "http://127.0.0.1:$PORT" \
        --api-key "$KEY" --bench "$BIN/sessions-bench" --output "$OUT"
    say "results: $OUT"
fi
if [[ -z ${BENCH_ONLY:-} || $BENCH_ONLY == replication ]]; then
    quiet
    OUT=bench/results/replication-$STAMP.json
    say "replication: lag at 1,000 session writes/s, list latency over ${BENCH_SESSIONS:-1000000} sessions"
    python3 bench/replication.py --database-url "$SESSIONS_DATABASE_URL" --clickhouse "$SESSIONS_CLICKHOUSE_URL" \
        --control-plane "http://127.0.0.1:$PORT" --api-key "$KEY" --environment "$(field environmentId)" \
        --organization "$(field organizationId)" --project "$(field projectId)" \
        --seconds "${BENCH_SECONDS:-10}" --sessions "${BENCH_SESSIONS:-1000000}" --output "$OUT"
    say "results: $OUT"
fi
python3 bench/summary.py "$STAMP"
[[ ! -f bench/results/summary-$STAMP.json ]] || say "summary: bench/results/summary-$STAMP.json"
