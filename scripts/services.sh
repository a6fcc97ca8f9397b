#!/usr/bin/env bash
# Runs the four Sessions services and the nginx ingress locally, on top of scripts/stack.sh.
#
#   scripts/services.sh up        start the stack (.dev) + services + ingress, create the dev
#                                 environment, write .dev/sessions.env, print a summary, return
#   scripts/services.sh run       the same, then stay in the foreground; Ctrl-C / SIGTERM stops
#                                 what this run started (services, ingress, then the stack)
#   scripts/services.sh down      stop services, ingress and stack (everything .dev/*.pid names)
#   scripts/services.sh start     services + ingress only (the stack must be running)
#   scripts/services.sh stop      services + ingress only
#   scripts/services.sh status    show what runs
#   scripts/services.sh nginx     render .dev/nginx.conf, check it with `nginx -t`, start the ingress
#   scripts/services.sh nginx-config   render .dev/nginx.conf and check it, start nothing
#
# Environment (all optional):
#   SESSIONS_BIN_DIR          folder of the service binaries (default: swift build --show-bin-path)
#   SESSIONS_PUBLIC_PORT      ingress port on 127.0.0.1 (default 8080)
#   SESSIONS_PUBLIC_URL       public base URL (default http://127.0.0.1:$SESSIONS_PUBLIC_PORT)
#   SESSIONS_LOG_LEVEL        passed to the services (default info)
#   SESSIONS_STACK_PORTS      default | free, for the stack started by up/run (default: default)
#   SESSIONS_SERVICES_TIMEOUT seconds to wait for each /readyz (default 60)
#   SESSIONS_DEV_DIR          state folder (default <repo>/.dev)
#   SESSIONS_{CONTROL_PLANE,REALTIME,WAITPOINTS,REPLICATOR}_PORT   (default 3001..3004)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DEV=${SESSIONS_DEV_DIR:-$ROOT/.dev}
mkdir -p "$DEV"
DEV=$(cd "$DEV" && pwd -P)
LOGS=$DEV/logs
STACK=$ROOT/scripts/stack.sh
TEMPLATE=$ROOT/compose/nginx/sessions.conf.template
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)

SERVICES=(control-plane realtime waitpoints replicator)
declare -A PORT=(
    [control-plane]=${SESSIONS_CONTROL_PLANE_PORT:-3001}
    [realtime]=${SESSIONS_REALTIME_PORT:-3002}
    [waitpoints]=${SESSIONS_WAITPOINTS_PORT:-3003}
    [replicator]=${SESSIONS_REPLICATOR_PORT:-3004}
)
PUBLIC_PORT=${SESSIONS_PUBLIC_PORT:-8080}
PUBLIC_URL=${SESSIONS_PUBLIC_URL:-http://127.0.0.1:$PUBLIC_PORT}
LOG_LEVEL=${SESSIONS_LOG_LEVEL:-info}
READY_TIMEOUT=${SESSIONS_SERVICES_TIMEOUT:-60}
STOP_TIMEOUT=30

# `|| true`: a closed stderr (Ctrl-C on `make run | tee`) must not stop a shutdown half-way.
log() { printf 'services: %s\n' "$*" >&2 2>/dev/null || true; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
elapsed() { local ms=$(($(now_ms) - $1)); printf '%d.%03ds' $((ms / 1000)) $((ms % 1000)); }
usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

BIN=
resolve_bin() {
    [[ -n $BIN ]] && return 0
    BIN=${SESSIONS_BIN_DIR:-$(cd "$ROOT" && swift build -c debug --show-bin-path)}
    local name
    for name in "${SERVICES[@]}"; do
        [[ -x $BIN/$name ]] || die "$BIN/$name does not exist: build first (swift build)"
    done
}

# --------------------------------------------------------------------------------------------
# process bookkeeping: a pid file names our process only while that pid still runs the expected
# executable from the expected working directory (guards against pid reuse).
# --------------------------------------------------------------------------------------------

process_is() { # pid executable-name cwd
    local exe cwd
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    cwd=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 1
    [[ ${exe##*/} == "$2" && $cwd == "$3" ]]
}

# During startup the pid may still be the launching subshell (before exec), so "alive" there only
# means: the process exists and is not a zombie.
running() { [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

workdir_of() { [[ $1 == nginx ]] && echo "$DEV/nginx" || echo "$DEV"; }

pid_of() { # name -> pid, when that process runs
    local file=$DEV/$1.pid pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    process_is "$pid" "$1" "$(workdir_of "$1")" || return 1
    echo "$pid"
}

show_log_tail() { # name
    local file=$LOGS/$1.log
    if [[ -s $file ]]; then
        printf 'services: ---- last lines of %s ----\n' "$file" >&2
        tail -n 40 "$file" >&2
        printf 'services: ----\n' >&2
    else
        log "(no output in $file)"
    fi
}

load_stack_env() {
    [[ -s $DEV/stack.env ]] || die "$DEV/stack.env is missing: start the stack first (scripts/stack.sh start .dev)"
    # shellcheck source=/dev/null
    source "$DEV/stack.env"
}

# --------------------------------------------------------------------------------------------
# services
# --------------------------------------------------------------------------------------------

# One secret for channel tokens, kept across restarts so tokens handed out stay valid.
token_secret() {
    local file=$DEV/realtime-token-secret
    [[ -s $file ]] || (umask 077 && head -c 48 /dev/urandom | base64 | tr -d '/+=\n' >"$file")
    cat "$file"
}

# The operator token of the control plane's admin API (sessionsctl env create), kept across restarts.
admin_token() {
    local file=$DEV/admin-token
    [[ -s $file ]] || (umask 077 && head -c 48 /dev/urandom | base64 | tr -d '/+=\n' >"$file")
    cat "$file"
}

launch_service() { # name
    local name=$1 bin=$BIN/$1
    mkdir -p "$LOGS"
    printf '\n==== %s starting at %s ====\n' "$name" "$(date -u +%FT%TZ)" >>"$LOGS/$name.log"
    (
        cd "$DEV"
        exec env \
            SESSIONS_DATABASE_URL="$SESSIONS_DATABASE_URL" \
            SESSIONS_REDIS_URL="$SESSIONS_REDIS_URL" \
            SESSIONS_NATS_URL="$SESSIONS_NATS_URL" \
            SESSIONS_CLICKHOUSE_URL="$SESSIONS_CLICKHOUSE_URL" \
            SESSIONS_HTTP_HOST=127.0.0.1 \
            SESSIONS_HTTP_PORT="${PORT[$name]}" \
            SESSIONS_PUBLIC_URL="$PUBLIC_URL" \
            SESSIONS_LOG_LEVEL="$LOG_LEVEL" \
            SESSIONS_REALTIME_TOKEN_SECRET="$(token_secret)" \
            SESSIONS_ADMIN_TOKEN="$([[ $name == control-plane ]] && admin_token)" \
            setsid "$bin" </dev/null >>"$LOGS/$name.log" 2>&1
    ) &
    echo $! >"$DEV/$name.pid"
}

wait_http_ok() { # name pid url
    local name=$1 pid=$2 url=$3 deadline
    deadline=$(($(now_ms) + READY_TIMEOUT * 1000))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        if ! running "$pid"; then
            log "$name exited during startup"
            show_log_tail "$name"
            return 1
        fi
        if (($(now_ms) > deadline)); then
            log "$name was not ready after ${READY_TIMEOUT}s ($url)"
            show_log_tail "$name"
            return 1
        fi
        sleep 0.1
    done
}

STARTED=() # what this invocation started, for `run` to stop on exit

start_services() {
    local name pid t0 to_wait=()
    load_stack_env
    mkdir -p "$DEV" "$LOGS"
    t0=$(now_ms)
    for name in "${SERVICES[@]}"; do
        if pid=$(pid_of "$name"); then
            log "$name already runs (pid $pid)"
            continue
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$name]}") 2>/dev/null; then
            log "port ${PORT[$name]} for $name is already in use by another process"
            return 1
        fi
        launch_service "$name"
        STARTED+=("$name")
        to_wait+=("$name")
    done
    for name in "${to_wait[@]}"; do
        wait_http_ok "$name" "$(<"$DEV/$name.pid")" "http://127.0.0.1:${PORT[$name]}/readyz" || return 1
        log "$name ready on 127.0.0.1:${PORT[$name]}, pid $(<"$DEV/$name.pid") ($(elapsed "$t0"))"
    done
}

stop_processes() { # names... : SIGTERM all, then wait for all (bounded), SIGKILL stragglers
    local name pid deadline pids=() names=()
    for name in "$@"; do
        if pid=$(pid_of "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            names+=("$name")
        else
            rm -f "$DEV/$name.pid"
        fi
    done
    deadline=$(($(now_ms) + STOP_TIMEOUT * 1000))
    local i remaining
    while :; do
        remaining=0
        for i in "${!pids[@]}"; do
            if process_is "${pids[i]}" "${names[i]}" "$(workdir_of "${names[i]}")"; then
                remaining=1
                if (($(now_ms) > deadline)); then
                    log "${names[i]} (pid ${pids[i]}) did not stop within ${STOP_TIMEOUT}s; killing it"
                    kill -KILL "${pids[i]}" 2>/dev/null || true
                fi
            fi
        done
        ((remaining)) || break
        sleep 0.05
    done
    for i in "${!pids[@]}"; do
        rm -f "$DEV/${names[i]}.pid"
        log "stopped ${names[i]} (pid ${pids[i]})"
    done
}

# --------------------------------------------------------------------------------------------
# nginx ingress
# --------------------------------------------------------------------------------------------

# shellcheck disable=SC2016 # the ${SESSIONS_...} placeholders are literal text
render_nginx_config() {
    local fragment user_line=
    [[ -r $TEMPLATE ]] || die "$TEMPLATE is missing"
    [[ -x $NGINX ]] || die "nginx is not installed (scripts/stack.sh install)"
    mkdir -p "$DEV/nginx" "$LOGS"
    fragment=$(<"$TEMPLATE")
    fragment=${fragment//'${SESSIONS_INGRESS_LISTEN}'/127.0.0.1:$PUBLIC_PORT}
    fragment=${fragment//'${SESSIONS_INGRESS_ACCESS_LOG}'/$LOGS/nginx-access.log}
    fragment=${fragment//'${SESSIONS_CONTROL_PLANE_ADDR}'/127.0.0.1:${PORT[control-plane]}}
    fragment=${fragment//'${SESSIONS_REALTIME_ADDR}'/127.0.0.1:${PORT[realtime]}}
    fragment=${fragment//'${SESSIONS_WAITPOINTS_ADDR}'/127.0.0.1:${PORT[waitpoints]}}
    fragment=${fragment//'${SESSIONS_REPLICATOR_ADDR}'/127.0.0.1:${PORT[replicator]}}
    [[ $fragment != *'${SESSIONS_'* ]] || die "unfilled placeholder in $TEMPLATE"
    # Workers of a root master drop to an unprivileged user; they need no files of their own
    # because request and response bodies are never buffered to disk.
    ((EUID == 0)) && user_line='user nobody nogroup;'
    cat >"$DEV/nginx.conf.tmp" <<EOF
# Generated by scripts/services.sh from compose/nginx/sessions.conf.template; do not edit.
$user_line
daemon off;
worker_processes 1;
pid $DEV/nginx/nginx.pid;
error_log $LOGS/nginx.log notice;

events {
    worker_connections 1024;
}

http {
    default_type application/octet-stream;
    server_tokens off;
    client_body_temp_path $DEV/nginx/tmp/client_body;
    proxy_temp_path $DEV/nginx/tmp/proxy;
    fastcgi_temp_path $DEV/nginx/tmp/fastcgi;
    uwsgi_temp_path $DEV/nginx/tmp/uwsgi;
    scgi_temp_path $DEV/nginx/tmp/scgi;

$fragment
}
EOF
    mv "$DEV/nginx.conf.tmp" "$DEV/nginx.conf"
    mkdir -p "$DEV/nginx/tmp"
    "$NGINX" -t -q -p "$DEV/nginx" -c "$DEV/nginx.conf" -e "$LOGS/nginx.log" \
        || die "nginx rejected $DEV/nginx.conf"
}

start_nginx() {
    local pid t0
    t0=$(now_ms)
    if pid=$(pid_of nginx); then
        log "nginx already runs (pid $pid); reloading its configuration"
        render_nginx_config
        kill -HUP "$pid"
        return 0
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PUBLIC_PORT") 2>/dev/null; then
        log "port $PUBLIC_PORT for the ingress is already in use (set SESSIONS_PUBLIC_PORT)"
        return 1
    fi
    render_nginx_config
    (
        cd "$DEV/nginx"
        # shellcheck disable=SC2094 # nginx appends to its own log; the redirection catches the rest
        exec setsid "$NGINX" -p "$DEV/nginx" -c "$DEV/nginx.conf" -e "$LOGS/nginx.log" </dev/null >>"$LOGS/nginx.log" 2>&1
    ) &
    echo $! >"$DEV/nginx.pid"
    pid=$!
    STARTED+=(nginx)
    # Any HTTP answer means nginx accepts connections (the services may be down: that is a 503).
    local deadline=$(($(now_ms) + READY_TIMEOUT * 1000))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PUBLIC_PORT/" 2>/dev/null) != 000 ]]; do
        if ! running "$pid"; then
            log "nginx exited during startup"
            show_log_tail nginx
            return 1
        fi
        (($(now_ms) < deadline)) || { log "nginx was not ready after ${READY_TIMEOUT}s"; show_log_tail nginx; return 1; }
        sleep 0.05
    done
    log "nginx ready on $PUBLIC_URL, pid $(<"$DEV/nginx.pid") ($(elapsed "$t0"))"
}

# --------------------------------------------------------------------------------------------
# development environment + summary
# --------------------------------------------------------------------------------------------

create_environment() {
    local output json fields
    output=$(cd "$DEV" && env \
        SESSIONS_DATABASE_URL="$SESSIONS_DATABASE_URL" \
        SESSIONS_REDIS_URL="$SESSIONS_REDIS_URL" \
        SESSIONS_NATS_URL="$SESSIONS_NATS_URL" \
        SESSIONS_CLICKHOUSE_URL="$SESSIONS_CLICKHOUSE_URL" \
        SESSIONS_PUBLIC_URL="$PUBLIC_URL" \
        SESSIONS_LOG_LEVEL="$LOG_LEVEL" \
        "$BIN/control-plane" env create --organization dev --project dev --type development \
        2>>"$LOGS/control-plane.log") || die "control-plane env create failed (see $LOGS/control-plane.log)"
    json=$(grep -E '^\{' <<<"$output" | tail -n 1) || true
    [[ -n $json ]] || die "control-plane env create printed no JSON line: $output"
    fields=$(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print(d["apiKey"], d["environmentId"], d.get("projectId", ""), d.get("organizationId", ""))' "$json") \
        || die "cannot read the output of control-plane env create: $json"
    read -r API_KEY ENV_ID PROJECT_ID ORG_ID <<<"$fields"
    # sessionsctl on PATH once sessions.env is sourced (the build dir also holds the services).
    mkdir -p "$DEV/bin"
    ln -sf "$BIN/sessionsctl" "$DEV/bin/sessionsctl"
    cat >"$DEV/sessions.env.tmp" <<EOF
export PATH="$(cd "$DEV" && pwd)/bin:\$PATH"
export SESSIONS_URL=$PUBLIC_URL
export SESSIONS_API_KEY=$API_KEY
export SESSIONS_ENV_ID=$ENV_ID
export SESSIONS_PROJECT_ID=$PROJECT_ID
export SESSIONS_ORGANIZATION_ID=$ORG_ID
export SESSIONS_ADMIN_TOKEN=$(admin_token)
$(cat "$DEV/stack.env")
EOF
    mv "$DEV/sessions.env.tmp" "$DEV/sessions.env"
}

print_summary() {
    local rel_dev=${DEV#"$PWD"/}
    cat <<EOF

  Sessions is running (development environment)

    URL            $PUBLIC_URL
    API key        $API_KEY
    Environment    $ENV_ID

    Use it:        source $rel_dev/sessions.env      (sets the URL and key, puts sessionsctl on PATH)
                   sessionsctl create --type demo --external-id hello && sessionsctl tail hello
                   curl -H "Authorization: Bearer \$SESSIONS_API_KEY" -H 'Content-Type: application/json' \\
                        \$SESSIONS_URL/api/v1/sessions -d '{"type":"demo","externalId":"hello"}'
    API:           $PUBLIC_URL/api/openapi.json (the README has a quickstart)
    Health:        $PUBLIC_URL/healthz/{control-plane,realtime,waitpoints,replicator}
    Readiness:     $PUBLIC_URL/readyz/{control-plane,realtime,waitpoints,replicator}
    Logs:          $rel_dev/logs/  (services, nginx, postgres, redis, nats, clickhouse)
    Stop:          ${STOP_HINT:-make down}

EOF
}

# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------

stack_running() { "$STACK" status "$DEV" >/dev/null 2>&1; }

# If a start fails anywhere (including `die`), stop what this command started; the stack stays.
abort_started() {
    local status=$?
    trap - EXIT
    if ((status != 0 && ${#STARTED[@]})); then
        log "start failed; stopping what this command started"
        stop_processes "${STARTED[@]}"
    fi
    exit "$status"
}

cmd_start() {
    resolve_bin
    trap abort_started EXIT
    start_services || exit 1
    start_nginx || exit 1
    create_environment
    trap - EXIT
}

cmd_stop() {
    stop_processes "${SERVICES[@]}"
    stop_processes nginx
}

cmd_up() {
    local t0
    t0=$(now_ms)
    resolve_bin
    "$STACK" start "$DEV" --ports "${SESSIONS_STACK_PORTS:-default}"
    cmd_start
    log "up in $(elapsed "$t0")"
    print_summary
}

cmd_down() {
    cmd_stop
    "$STACK" stop "$DEV"
}

cmd_run() {
    local stack_was_running=0 t0 name pid
    declare -A reported=()
    t0=$(now_ms)
    resolve_bin
    stack_running && stack_was_running=1
    RUN_STACK_STARTED=$((!stack_was_running))
    # Ctrl-C or SIGTERM is the normal way to end a run: stop what it started and exit 0. Any
    # failure (including `die`) ends the run the same way, with its status.
    trap 'run_shutdown 0' INT TERM
    trap 'run_shutdown $?' EXIT
    "$STACK" start "$DEV" --ports "${SESSIONS_STACK_PORTS:-default}" || exit 1
    start_services || exit 1
    start_nginx || exit 1
    create_environment
    log "up in $(elapsed "$t0")"
    STOP_HINT="Ctrl-C here (or make down from another terminal)" print_summary
    while :; do
        sleep 1 &
        wait $! || true
        for name in "${SERVICES[@]}" nginx; do
            [[ -n ${reported[$name]:-} || ! -s $DEV/$name.pid ]] && continue
            if ! pid_of "$name" >/dev/null; then
                reported[$name]=1
                log "$name has exited"
                show_log_tail "$name"
            fi
        done
    done
}

run_shutdown() {
    local status=${1:-0}
    trap '' INT TERM PIPE
    trap - EXIT
    set +e
    log "shutting down what this run started"
    local services=() name
    for name in "${STARTED[@]}"; do [[ $name != nginx ]] && services+=("$name"); done
    ((${#services[@]})) && stop_processes "${services[@]}"
    [[ " ${STARTED[*]} " == *" nginx "* ]] && stop_processes nginx
    if ((RUN_STACK_STARTED)); then
        "$STACK" stop "$DEV"
    fi
    exit "$status"
}

cmd_status() {
    local name pid
    for name in "${SERVICES[@]}" nginx; do
        if pid=$(pid_of "$name"); then
            printf '%-14s running  pid %s\n' "$name" "$pid"
        else
            printf '%-14s stopped\n' "$name"
        fi
    done
    "$STACK" status "$DEV" || true
}

case ${1:-} in
    up) cmd_up ;;
    run) cmd_run ;;
    down) cmd_down ;;
    start) cmd_start; print_summary ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    nginx) start_nginx ;;
    nginx-config) render_nginx_config; log "nginx accepts $DEV/nginx.conf" ;;
    *) usage ;;
esac
