#!/usr/bin/env bash
# Fuzz drill (make fuzz): a throwaway stack on free ports, the four services and the ingress, then
# Schemathesis against the OpenAPI document the control plane serves (GET /api/openapi.json),
# through the ingress so every route reaches its service. Checks: not_a_server_error and
# response_schema_conformance, for every operation, with valid credentials and with invalid ones:
#
#   secret key      Authorization: Bearer <the environment's API key>      every operation
#   channel token   Authorization: Bearer <X-S2-Access-Token from PUT>     the S2 routes (/realtime/s2/…)
#   admin token     Authorization: Bearer <SESSIONS_ADMIN_TOKEN>           the admin routes, when served
#   wrong key       Authorization: Bearer tr_dev_<random>                  every operation
#   no key          no Authorization header                                every operation
#
# Path parameters are drawn, part of the time, from real fixtures (an open session with records, a
# closed one, a pending and a completed waitpoint, their channels' S2 stream names) so requests get
# past the 404s. Long-lived routes are bounded, never excluded: the SSE subscribe gets
# `Timeout-Seconds: 1` (the stream ends after 1 s idle at the tail), the long-poll `timeout=1`, the
# S2 read `wait=0`; every request has a --request-timeout, so a hang is reported as a failure.
# Non-zero exit on any failure. Nothing is built: binaries come from SESSIONS_BIN_DIR (default
# .build/release when it holds them, else .build/debug).
#
#   FUZZ_MAX_EXAMPLES=25        examples per operation and phase
#   FUZZ_RUN_SECONDS=180        time limit of each Schemathesis run (exceeding it fails the run)
#   FUZZ_TOTAL_SECONDS=480      time limit of all the Schemathesis runs together
#   FUZZ_REQUEST_TIMEOUT=20     seconds per request
#   FUZZ_WORKERS=1              Schemathesis workers
#   FUZZ_SEED=<n>               reproduce a run
#   FUZZ_ONLY="secret key,no key"   run some of the credential runs
#   DRILL_KEEP=1                keep the stack folder (logs, reports) after the run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=scripts/drill-stack.sh
source "$ROOT/scripts/drill-stack.sh"

SCHEMATHESIS_VERSION=4.32.5
VENV=$ROOT/.dev/venv
ST=$VENV/bin/st
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-25}
RUN_SECONDS=${FUZZ_RUN_SECONDS:-180}
TOTAL_SECONDS=${FUZZ_TOTAL_SECONDS:-480}
REQUEST_TIMEOUT=${FUZZ_REQUEST_TIMEOUT:-20}
WORKERS=${FUZZ_WORKERS:-1}

drill_traps

T0=$SECONDS
drill_up fuzz # runs scripts/stack.sh install, which creates the venv
# Schemathesis in the project's venv.
if ! compgen -G "$VENV/lib/python3*/site-packages/schemathesis-$SCHEMATHESIS_VERSION.dist-info" >/dev/null; then
    drill_say "pip install schemathesis==$SCHEMATHESIS_VERSION"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi
WORK=$DRILL_DIR/fuzz
mkdir -p "$WORK"
AUTH="Authorization: Bearer $SESSIONS_API_KEY"

api() { # method path [json] -> body on stdout; fails on a non-2xx answer
    local args=(-sS --fail-with-body --max-time 20 -X "$1" -H "$AUTH" "$SESSIONS_URL$2")
    [[ -n ${3:-} ]] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
    curl "${args[@]}"
}
field() { "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# ---- fixtures ---------------------------------------------------------------------------------
drill_say "creating fixtures (sessions, records, waitpoints, a channel token)"
OPEN=$(api POST /api/v1/sessions '{"type":"fuzz","externalId":"fuzz-open","tags":["fuzz"]}' | field id)
CLOSED=$(api POST /api/v1/sessions '{"type":"fuzz","externalId":"fuzz-closed","tags":["fuzz"]}' | field id)
api POST "/realtime/v1/sessions/$OPEN/out/append" 'first record' >/dev/null
api POST "/realtime/v1/sessions/$OPEN/in/append" '{"approved":true}' >/dev/null
api POST "/realtime/v1/sessions/$CLOSED/out/append" 'before the close' >/dev/null
PENDING=$(api POST /api/v1/runs/run_fuzz/session-streams/wait \
    "{\"session\":\"$OPEN\",\"io\":\"out\",\"timeout\":\"1h\"}" | field waitpointId)
COMPLETED=$(api POST /api/v1/runs/run_fuzz/session-streams/wait \
    "{\"session\":\"$OPEN\",\"io\":\"in\",\"lastSeqNum\":-1}" | field waitpointId)
CHANNEL_TOKEN=$(curl -sS --fail --max-time 20 -D - -o /dev/null -X PUT -H "$AUTH" \
    "$SESSIONS_URL/realtime/v1/sessions/$OPEN/out" | tr -d '\r' | sed -n 's/^[Xx]-[Ss]2-[Aa]ccess-[Tt]oken: //p')
[[ -n $CHANNEL_TOKEN ]] || { drill_say "error: PUT $OPEN/out gave no X-S2-Access-Token"; exit 1; }
api POST "/api/v1/sessions/$CLOSED/close" '{"reason":"fuzz fixture"}' >/dev/null

curl -sS --fail --max-time 20 "$SESSIONS_URL/api/openapi.json" -o "$WORK/openapi.json"
# Schemathesis keeps `/` out of generated and dictionary path values unless the parameter shows an
# example with one; an S2 stream name has two (it is sent percent-encoded). Fuzz a copy of the
# document with such an example on the Stream parameter (the served document has none).
"$VENV/bin/python" - "$WORK/openapi.json" "$WORK/openapi-fuzz.json" "sessions/$OPEN/out" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
stream = doc.get("components", {}).get("parameters", {}).get("Stream")
if stream is not None:
    stream.setdefault("examples", {"stream": {"value": sys.argv[3]}})
json.dump(doc, open(sys.argv[2], "w"), indent=1)
PY
OPERATIONS=$("$VENV/bin/python" -c '
import json, sys
doc = json.load(open(sys.argv[1]))
for path, item in doc["paths"].items():
    for method, op in item.items():
        if isinstance(op, dict) and "operationId" in op:
            schemes = [name for requirement in op.get("security", doc.get("security", [])) for name in requirement]
            print(op["operationId"], method.upper(), path, ",".join(schemes) or "none")
' "$WORK/openapi-fuzz.json")
ops_with() { awk -v s="$1" '$4 ~ s { print $1 }' <<<"$OPERATIONS"; }
drill_say "OpenAPI document: $(wc -l <<<"$OPERATIONS") operations"

cat >"$WORK/schemathesis.toml" <<EOF
# Written by scripts/fuzz.sh.
[dictionaries.sessions]
values = ["$OPEN", "$CLOSED", "fuzz-open", "fuzz-closed"]
[dictionaries.waitpoints]
values = ["$PENDING", "$COMPLETED"]
[dictionaries.streams]
values = ["sessions/$OPEN/out", "sessions/$OPEN/in", "sessions/$CLOSED/out"]

[parameters]
"path.session" = { dictionary = "sessions", probability = 0.6 }
"body.session" = { dictionary = "sessions", probability = 0.6 }
"path.waitpoint" = { dictionary = "waitpoints", probability = 0.6 }
"path.stream" = { dictionary = "streams", probability = 0.6 }
# Long-lived routes answer within about a second (see the header of scripts/fuzz.sh).
"header.Timeout-Seconds" = "1"
"query.timeout" = "1"
"query.wait" = "0"
EOF

# ---- runs -------------------------------------------------------------------------------------
RESULTS=()
FAILED=0
run_st() { # name header-or-empty operation-ids...
    local name=$1 header=$2 status=0 args=() summary
    shift 2
    if [[ -n ${FUZZ_ONLY:-} && ",$FUZZ_ONLY," != *",$name,"* ]]; then return 0; fi
    if (($# == 0)); then
        RESULTS+=("$(printf '%-14s %-5s %s' "$name" "SKIP" "no operation in the document")")
        return 0
    fi
    local op limit=$((RUNS_DEADLINE - SECONDS))
    ((limit > RUN_SECONDS)) && limit=$RUN_SECONDS
    if ((limit < 10)); then
        FAILED=1
        RESULTS+=("$(printf '%-14s %-5s %s' "$name" "FAIL" "not run: FUZZ_TOTAL_SECONDS (${TOTAL_SECONDS}s) spent")")
        return 0
    fi
    for op in "$@"; do args+=(--include-operation-id "$op"); done
    if [[ -n $header ]]; then
        args+=(-H "$header")
    fi
    # Without credentials, do not let Schemathesis invent its own Authorization values.
    args+=(--generation-with-security-parameters false)
    [[ -n ${FUZZ_SEED:-} ]] && args+=(--seed "$FUZZ_SEED")
    local log=$WORK/${name// /-}.log
    drill_say "schemathesis, $name: $# operations"
    printf '\n==================== %s ====================\n' "$name"
    (
        cd "$WORK"
        exec timeout --signal=INT --kill-after=10 "$limit" "$ST" --config-file "$WORK/schemathesis.toml" \
            run "$WORK/openapi-fuzz.json" --url "$SESSIONS_URL" \
            --checks not_a_server_error,response_schema_conformance \
            --max-examples "$MAX_EXAMPLES" --workers "$WORKERS" --request-timeout "$REQUEST_TIMEOUT" \
            --no-color --output-sanitize false "${args[@]}"
    ) >"$log" 2>&1 &
    CHILD=$!
    wait "$CHILD" || status=$?
    CHILD=
    # The report without its progress lines, so the failures with their curl reproductions show.
    grep -vE '^\s*$' "$log" | sed -n '/^=\{5,\} \(FAILURES\|ERRORS\|WARNINGS\|SUMMARY\)/,$p' | cut -c1-2000
    summary=$(grep -E '^=+ .* in [0-9.]+s =+$' "$log" | tail -n 1 | sed -E 's/^=+ (.*) =+$/\1/')
    if ((status == 124 || status == 130 || status == 137)); then
        summary="TIME LIMIT: no result within ${limit}s (a request that never ends?)"
        tail -n 20 "$log"
    fi
    if ((status == 0)); then
        RESULTS+=("$(printf '%-14s %-5s %s' "$name" "PASS" "$summary")")
    else
        FAILED=1
        RESULTS+=("$(printf '%-14s %-5s %s' "$name" "FAIL" "${summary:-exit $status, see $log}")")
    fi
}

ALL_OPS=$(awk '{ print $1 }' <<<"$OPERATIONS")
BEARER_OPS=$(ops_with 'bearer')
S2_OPS=$(ops_with 'channelToken')
ADMIN_OPS=$(ops_with 'adminToken')
PUBLIC_OPS=$(ops_with 'none')
WRONG="tr_dev_$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"

RUNS_DEADLINE=$((SECONDS + TOTAL_SECONDS))
# shellcheck disable=SC2086 # one operation id per word
{
    run_st "secret key" "$AUTH" $BEARER_OPS $PUBLIC_OPS
    run_st "channel token" "Authorization: Bearer $CHANNEL_TOKEN" $S2_OPS
    if [[ -n ${SESSIONS_ADMIN_TOKEN:-} ]]; then
        run_st "admin token" "Authorization: Bearer $SESSIONS_ADMIN_TOKEN" $ADMIN_OPS
    fi
    run_st "wrong key" "Authorization: Bearer $WRONG" $ALL_OPS
    run_st "no key" "" $ALL_OPS
}

# ---- edge probes: inputs a random run may or may not reach -----------------------------------------
# Each must be refused with a 4xx or stored exactly as sent (read back equal) - never a 500, never
# silently changed. Run before the liveness check, which then shows whether one broke replication.
printf '\n==================== edge probes ====================\n'
if "$VENV/bin/python" - "$SESSIONS_URL" "$SESSIONS_API_KEY" "$OPEN" <<'PY'; then
import json, re, sys, urllib.error, urllib.request
base, key, session = sys.argv[1:4]
failed = 0

def call(method, path, body):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, method=method, data=data,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")[:200]
    except (OSError, ValueError) as error:  # the connection broke: the service may have crashed
        return 0, f"{type(error).__name__}: {error}"

def probe(label, method, path, body, sent=None, echoed=None):
    """4xx passes; 2xx passes only when `echoed(answer)` equals `sent`."""
    global failed
    status, answer = call(method, path, body)
    if 400 <= status < 500:
        verdict = "PASS"
    elif 200 <= status < 300 and echoed is not None and echoed(answer) == sent:
        verdict = "PASS"
    else:
        verdict = "FAIL"
        failed += 1
    shown = answer if not isinstance(answer, dict) else {k: answer.get(k) for k in ("error", "externalId", "tags", "metadata", "closedReason", "expiresAt", "waitpointId") if k in answer}
    print(f"{verdict}  {label}: {status} {json.dumps(shown, ensure_ascii=True)[:160]}")

nul = "probe\u0000tail"
probe("create: externalId with NUL", "POST", "/api/v1/sessions", {"type": "probe", "externalId": nul},
      nul, lambda a: a.get("externalId"))
probe("create: type with NUL", "POST", "/api/v1/sessions", {"type": nul}, nul, lambda a: a.get("type"))
probe("create: tag with NUL", "POST", "/api/v1/sessions", {"type": "probe", "tags": [nul]}, [nul], lambda a: a.get("tags"))
probe("create: metadata with NUL", "POST", "/api/v1/sessions", {"type": "probe", "metadata": {"k": nul}},
      {"k": nul}, lambda a: a.get("metadata"))
probe("update: tag with NUL", "PATCH", f"/api/v1/sessions/{session}", {"tags": [nul]}, [nul], lambda a: a.get("tags"))
probe("wait: tag with NUL", "POST", "/api/v1/runs/run_probe/session-streams/wait",
      {"session": session, "io": "in", "tags": [nul], "timeout": "1m"})
probe("create: expiresAt in the year 9999, ms .999", "POST", "/api/v1/sessions",
      {"type": "probe", "expiresAt": "9999-12-31T23:59:59.999Z"}, "9999-12-31T23:59:59.999Z", lambda a: a.get("expiresAt"))
# Accepted, it must read back as an RFC 3339 date-time (4-digit year); the liveness check below then
# shows whether ClickHouse took the row.
probe("create: expiresAt = 912000000000000 ms (year 30870)", "POST", "/api/v1/sessions",
      {"type": "probe", "expiresAt": 912000000000000}, True,
      lambda a: bool(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", a.get("expiresAt") or "")))
probe("create: expiresAt = 9300000000000000 ms (past PostgreSQL's last year)", "POST", "/api/v1/sessions",
      {"type": "probe", "expiresAt": 9300000000000000})
probe("wait: timeout 9999999999999w", "POST", "/api/v1/runs/run_probe/session-streams/wait",
      {"session": session, "io": "in", "timeout": "9999999999999w"})
# Last: a crash here would turn every later request into a 503 (the liveness check reports it).
probe("list: filter[createdAt][period]=20000000000w", "GET",
      "/api/v1/sessions?filter%5BcreatedAt%5D%5Bperiod%5D=20000000000w", None, True, lambda a: isinstance(a, dict))
sys.exit(1 if failed else 0)
PY
    RESULTS+=("$(printf '%-14s %-5s %s' "edge probes" "PASS" "refused with a 4xx or stored exactly")")
else
    FAILED=1
    RESULTS+=("$(printf '%-14s %-5s %s' "edge probes" "FAIL" "see 'edge probes' above")")
fi

# ---- after the fuzzing: still serving, still replicating ----------------------------------------
# A request the API accepted must not break the service for everyone else, e.g. a row that
# ClickHouse refuses would stop replication (and so the list API) for every later session.
printf '\n==================== after the fuzzing ====================\n'
ready() { # name: /readyz answers 200 within 30 s
    local var deadline=$((SECONDS + 30))
    var=SESSIONS_$(tr 'a-z-' 'A-Z_' <<<"$1")_PORT
    until curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:${!var}/readyz" 2>/dev/null; do
        ((SECONDS <= deadline)) || return 1
        sleep 0.5
    done
}
liveness() {
    local name deadline external found='' rc=0
    for name in control-plane realtime waitpoints replicator; do
        ready "$name" && continue
        rc=1
        echo "FAIL: $name does not answer /readyz with 200 after the fuzzing"
        grep -h -A1 'Fatal error' "$DRILL_DIR/logs/$name.log" | head -n 2
        grep -h -m1 -E '^ +[0-9]+ .* in (control-plane|realtime|waitpoints|replicator) at ' \
            "$DRILL_DIR/logs/$name.log" | head -n 1
        # Bring it back so the replication check below still runs.
        "$DRILL_SERVICES" start >>"$DRILL_DIR/logs/services-start.out" 2>&1 && ready "$name" || return 1
        echo "(restarted $name with scripts/services.sh start)"
    done
    ((rc)) || echo "all four services answer /readyz"
    external="fuzz-liveness-$RANDOM$RANDOM"
    api POST /api/v1/sessions "{\"type\":\"fuzz\",\"externalId\":\"$external\"}" >/dev/null || {
        echo "FAIL: creating a session after the fuzzing failed"
        return 1
    }
    deadline=$((SECONDS + 30))
    while ((SECONDS <= deadline)); do
        if curl -fsS --max-time 10 -g -H "$AUTH" "$SESSIONS_URL/api/v1/sessions?filter[externalId]=$external" 2>/dev/null |
            grep -q "\"$external\""; then
            found=1
            break
        fi
        sleep 0.5
    done
    if [[ -z $found ]]; then
        echo "FAIL: a session created after the fuzzing is not listed (not in ClickHouse) within 30 s"
        rc=1
    else
        echo "a session created after the fuzzing is listed (replicated to ClickHouse) within $((SECONDS - deadline + 30)) s"
    fi
    # Every session PostgreSQL has (whatever the fuzzer created) must reach ClickHouse.
    local pg ch missing
    # (already waited 30 s above when the new session did not show up)
    deadline=$((SECONDS + 30))
    [[ -n $found ]] || deadline=$SECONDS
    while :; do
        pg=$(psql "$SESSIONS_DATABASE_URL" -XtAqc 'SELECT friendly_id FROM sessions' | LC_ALL=C sort)
        ch=$(curl -fsS --max-time 10 "$SESSIONS_CLICKHOUSE_URL/" --data-binary \
            'SELECT friendly_id FROM sessions_v1 FINAL WHERE _is_deleted = 0 FORMAT TSV' | LC_ALL=C sort) || ch=
        [[ $pg == "$ch" ]] && break
        if ((SECONDS > deadline)); then
            missing=$(LC_ALL=C comm -23 <(echo "$pg") <(echo "$ch"))
            echo "FAIL: ClickHouse has $(grep -c . <<<"$ch") sessions, PostgreSQL $(grep -c . <<<"$pg"), 30 s after the" \
                "last write; not replicated: $(head -n 3 <<<"$missing" | tr '\n' ' ')"
            echo "their expiresAt in PostgreSQL and the replicator's last errors:"
            psql "$SESSIONS_DATABASE_URL" -XtAqc "SELECT friendly_id, expires_at FROM sessions WHERE friendly_id IN ($(
                head -n 3 <<<"$missing" | sed "s/.*/'&'/" | paste -sd,))"
            grep -E '\b(error|warning)\b' "$DRILL_DIR/logs/replicator.log" | tail -n 3 | cut -c1-600
            return 1
        fi
        sleep 0.5
    done
    echo "ClickHouse sessions_v1 holds every one of PostgreSQL's $(grep -c . <<<"$pg") sessions"
    return "$rc"
}
if liveness; then
    RESULTS+=("$(printf '%-14s %-5s %s' "after fuzzing" "PASS" "services ready, every session replicated")")
else
    FAILED=1
    RESULTS+=("$(printf '%-14s %-5s %s' "after fuzzing" "FAIL" "see 'after the fuzzing' above")")
fi

printf '\n==================== summary ====================\n'
printf '%-14s %-5s %s\n' "credentials" "result" "schemathesis"
printf '%s\n' "${RESULTS[@]}"
KEPT="logs are deleted with the stack; DRILL_KEEP=1 keeps them"
[[ ${DRILL_KEEP:-0} == 1 ]] && KEPT="logs in $WORK"
printf '(checks: not_a_server_error, response_schema_conformance; %s examples per operation and phase; %s)\n' \
    "$MAX_EXAMPLES" "$KEPT"
drill_say "finished in $((SECONDS - T0)) s (exit $FAILED)"
exit "$FAILED"
