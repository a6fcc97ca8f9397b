# shellcheck shell=bash
# A throwaway Sessions deployment for the drills (scripts/faults.sh, scripts/fuzz.sh): a stack on
# free ports in its own folder (scripts/stack.sh), the four services and the nginx ingress on free
# ports (scripts/services.sh with SESSIONS_DEV_DIR pointing at that folder), and a development
# environment. Sourced, not run:
#
#   source scripts/drill-stack.sh
#   drill_up NAME        install what is missing, start everything in a new $DRILL_DIR; exports the
#                        stack URLs, SESSIONS_URL (ingress), SESSIONS_API_KEY, SESSIONS_ENV_ID, ...
#   drill_down           stop the services, the ingress and the stack; delete $DRILL_DIR unless
#                        DRILL_KEEP=1 (then the logs stay for a post-mortem)
#
# SESSIONS_BIN_DIR: folder of the service binaries (default .build/release when it holds them,
# else .build/debug); nothing is built here.

DRILL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DRILL_STACK=$DRILL_ROOT/scripts/stack.sh
DRILL_SERVICES=$DRILL_ROOT/scripts/services.sh
DRILL_DIR=
DRILL_NAME=drill

drill_say() { printf '[%s] %s\n' "$DRILL_NAME" "$*" >&2 2>/dev/null || true; }

drill_bin_dir() {
    local dir name
    if [[ -n ${SESSIONS_BIN_DIR:-} ]]; then
        dir=$SESSIONS_BIN_DIR
    elif [[ -x $DRILL_ROOT/.build/release/control-plane ]]; then
        dir=$DRILL_ROOT/.build/release
    else
        dir=$DRILL_ROOT/.build/debug
    fi
    dir=$(cd "$dir" 2>/dev/null && pwd -P) || { drill_say "error: binary folder $dir does not exist (build first)"; return 1; }
    for name in control-plane realtime waitpoints replicator; do
        [[ -x $dir/$name ]] || { drill_say "error: $dir/$name is missing (build first, or set SESSIONS_BIN_DIR)"; return 1; }
    done
    echo "$dir"
}

drill_up() { # name
    DRILL_NAME=${1:-drill}
    local bin name
    bin=$(drill_bin_dir) || return 1
    "$DRILL_STACK" install
    DRILL_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sessions-$DRILL_NAME.XXXXXX")
    chmod 755 "$DRILL_DIR" # PostgreSQL runs as `postgres` and must be able to enter it
    # Restarts during a drill must run the same binaries even if a build replaces them meanwhile:
    # hard links (or copies across file systems) keep this run's versions.
    mkdir -p "$DRILL_DIR/build"
    for name in control-plane realtime waitpoints replicator; do
        ln "$bin/$name" "$DRILL_DIR/build/$name" 2>/dev/null || cp "$bin/$name" "$DRILL_DIR/build/$name" || return 1
    done
    # scripts/services.sh links sessionsctl from the same folder when it writes sessions.env.
    if [[ -x $bin/sessionsctl ]]; then
        ln "$bin/sessionsctl" "$DRILL_DIR/build/sessionsctl" 2>/dev/null || cp "$bin/sessionsctl" "$DRILL_DIR/build/sessionsctl"
    fi
    export SESSIONS_BIN_DIR=$DRILL_DIR/build
    drill_say "binaries: $bin (linked into $DRILL_DIR/build)"
    drill_say "starting the stack in $DRILL_DIR"
    "$DRILL_STACK" start "$DRILL_DIR" --ports free || return 1
    read -r SESSIONS_CONTROL_PLANE_PORT SESSIONS_REALTIME_PORT SESSIONS_WAITPOINTS_PORT \
        SESSIONS_REPLICATOR_PORT SESSIONS_PUBLIC_PORT < <("$DRILL_STACK" ports 5)
    export SESSIONS_DEV_DIR=$DRILL_DIR SESSIONS_CONTROL_PLANE_PORT SESSIONS_REALTIME_PORT \
        SESSIONS_WAITPOINTS_PORT SESSIONS_REPLICATOR_PORT SESSIONS_PUBLIC_PORT
    export SESSIONS_PUBLIC_URL=http://127.0.0.1:$SESSIONS_PUBLIC_PORT
    export SESSIONS_LOG_LEVEL=${SESSIONS_LOG_LEVEL:-info}
    unset SESSIONS_STACK_PORTS
    drill_say "starting the services and the ingress"
    "$DRILL_SERVICES" start >"$DRILL_DIR/logs/services-start.out" || return 1
    # shellcheck source=/dev/null
    source "$DRILL_DIR/sessions.env"
    export SESSIONS_URL SESSIONS_API_KEY SESSIONS_ENV_ID SESSIONS_PROJECT_ID SESSIONS_ORGANIZATION_ID
    SESSIONS_ADMIN_TOKEN=${SESSIONS_ADMIN_TOKEN:-$(cat "$DRILL_DIR/admin-token" 2>/dev/null || true)}
    export SESSIONS_ADMIN_TOKEN
    drill_say "up: $SESSIONS_URL (control-plane :$SESSIONS_CONTROL_PLANE_PORT, realtime :$SESSIONS_REALTIME_PORT," \
        "waitpoints :$SESSIONS_WAITPOINTS_PORT, replicator :$SESSIONS_REPLICATOR_PORT)"
}

drill_down() {
    [[ -n $DRILL_DIR && -d $DRILL_DIR ]] || return 0
    SESSIONS_DEV_DIR=$DRILL_DIR "$DRILL_SERVICES" stop >/dev/null 2>&1 || true
    "$DRILL_STACK" stop "$DRILL_DIR" >/dev/null 2>&1 || true
    if [[ ${DRILL_KEEP:-0} == 1 ]]; then
        drill_say "stopped; logs and data kept in $DRILL_DIR"
    else
        "$DRILL_STACK" stop "$DRILL_DIR" --purge >/dev/null 2>&1 || true
        rm -rf "$DRILL_DIR"
    fi
    DRILL_DIR=
}

# The exit path both drills share: stop the drill process (CHILD, when set), print the services'
# last warnings when the run failed, stop the stack. Call once, right after sourcing.
CHILD=
# shellcheck disable=SC2317 # runs from the traps below
drill_cleanup() {
    local status=$?
    trap - EXIT INT TERM
    trap '' PIPE
    set +e
    if [[ -n $CHILD ]]; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    if ((status != 0)) && [[ -n $DRILL_DIR && -d $DRILL_DIR/logs ]]; then
        local name
        for name in control-plane realtime waitpoints replicator; do
            [[ -s $DRILL_DIR/logs/$name.log ]] || continue
            printf '\n---- %s: last error/warning lines ----\n' "$name" >&2
            grep -E '\b(error|critical|warning)\b' "$DRILL_DIR/logs/$name.log" | tail -n 8 >&2
        done
    fi
    drill_down
    exit "$status"
}

drill_traps() {
    trap drill_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
