#!/usr/bin/env bash
# Benchmarks in release mode against a throwaway stack on free ports; prints a table per
# benchmark and writes JSON under bench/results/. Today: the control plane (issue 3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
STACK=$ROOT/scripts/stack.sh
say() { printf '[bench] %s\n' "$*" >&2; }

DIR=
SERVICE_PID=
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [[ -n $SERVICE_PID ]] && kill -TERM "$SERVICE_PID" 2>/dev/null && wait "$SERVICE_PID" 2>/dev/null || true
    if [[ -n $DIR ]]; then
        "$STACK" stop "$DIR" --purge >/dev/null 2>&1 || true
        rm -rf "$DIR"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$STACK" install
command -v wrk >/dev/null || {
    say "installing wrk"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
}
say "building in release mode"
swift build -c release --product control-plane
BIN=$(swift build -c release --show-bin-path)

DIR=$(mktemp -d "${TMPDIR:-/tmp}/sessions-bench.XXXXXX")
chmod 755 "$DIR"
"$STACK" start "$DIR" --ports free
# shellcheck source=/dev/null
source "$DIR/stack.env"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SESSIONS_HTTP_PORT=$PORT SESSIONS_LOG_LEVEL=warning SESSIONS_DATABASE_POOL_SIZE=16 \
    "$BIN/control-plane" >"$DIR/control-plane.log" 2>&1 &
SERVICE_PID=$!
for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null || { tail -20 "$DIR/control-plane.log"; exit 1; }
KEY=$("$BIN/control-plane" env create --organization bench --project bench |
    python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["apiKey"])')

mkdir -p bench/results
OUT=bench/results/control-plane-$(date -u +%Y%m%dT%H%M%SZ).json
say "control plane: create and retrieve at concurrency 32 (wrk) vs raw PostgreSQL (pgbench)"
python3 bench/control_plane.py --url "http://127.0.0.1:$PORT" --api-key "$KEY" \
    --database-url "$SESSIONS_DATABASE_URL" --concurrency 32 --seconds "${BENCH_SECONDS:-10}" --output "$OUT"
say "results: $OUT"
