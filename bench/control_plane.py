#!/usr/bin/env python3
"""Control-plane benchmark: session create and retrieve through the HTTP API (wrk), side by side
with the raw PostgreSQL INSERT/SELECT of the same rows (pgbench), at the same concurrency, in
the same run, from the same machine. Both load generators are separate native processes, so the
numbers measure the servers, not the client. Also measures the HTTP floor: `GET /healthz`, which
does no work, through the same server — the most any route of it can answer on this machine.

With --processes, it also counts the CPU each process spends per create (until the creates' events
are relayed and replicated), per raw INSERT and per GET /healthz, and from those the most creates
a second the machine could give if the control plane and the load generator cost nothing, or only
what they spend on GET /healthz.

Usage: control_plane.py --url URL --api-key KEY --database-url URL [--concurrency 32]
                        [--seconds 10] [--warmup 2] [--processes NAME=PID,...] [--output FILE]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

import benchlib

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


def pgbench(database_url, script, concurrency, seconds):
    """Runs pgbench with a custom script; returns (ops/s, p50 ms, p99 ms, transactions) from its
    per-transaction log."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "script.sql")
        with open(path, "w") as handle:
            handle.write(script)
        output = subprocess.run(
            [PGBENCH, "-n", "-c", str(concurrency), "-j", "2", "-T", str(seconds), "-M", "prepared",
             "-f", path, "-l", "--log-prefix", os.path.join(folder, "log"), database_url],
            check=True, capture_output=True, text=True, cwd=folder,
        ).stdout
        rate = float(re.search(r"tps = ([\d.]+)", output).group(1))
        transactions = int(re.search(r"number of transactions actually processed: (\d+)", output).group(1))
        latencies = []
        for name in os.listdir(folder):
            if name.startswith("log"):
                with open(os.path.join(folder, name)) as log:
                    latencies += [int(line.split()[2]) for line in log if line.strip()]
    return rate, benchlib.percentile(latencies, 50) / 1000.0, benchlib.percentile(latencies, 99) / 1000.0, transactions


# Every create names a new externalId.
CREATE_LUA = benchlib.THREAD_PREFIX_LUA + """
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"type":"bench","externalId":"bench-%s-%d","tags":["bench"]}', prefix, counter)
  -- A headers table replaces those given with -H, so carry them over.
  local headers = {["Content-Type"] = "application/json"}
  for name, value in pairs(wrk.headers) do headers[name] = headers[name] or value end
  return wrk.format("POST", "/api/v1/sessions", headers, body)
end
"""

RETRIEVE_LUA = """
ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/api/v1/sessions/" .. ids[(counter %% #ids) + 1])
end
"""

INSERT_SQL = r"""\set n random(1, 1000000000000)
INSERT INTO bench_sessions (id, friendly_id, external_id, type, tags, organization_id, project_id,
    runtime_environment_id, environment_type)
VALUES (:client_id || '-' || :n, 'session_' || :client_id || '-' || :n, 'bench-' || :client_id || '-' || :n,
    'bench', '{bench}', 'o', 'p', 'e', 'DEVELOPMENT')
ON CONFLICT DO NOTHING;
"""

# Waits (up to a minute) until every event written so far has been relayed to JetStream and every
# replication slot has confirmed the WAL written so far: the creates' whole cost has been paid.
DRAIN_SQL = """
DO $$ DECLARE written pg_lsn := pg_current_wal_lsn(); BEGIN
    FOR attempt IN 1..1200 LOOP
        IF NOT EXISTS (SELECT FROM session_events_outbox)
            AND NOT EXISTS (SELECT FROM pg_replication_slots WHERE confirmed_flush_lsn < written) THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RAISE EXCEPTION 'the creates'' events were not all relayed and replicated within a minute';
END $$;
"""

SELECT_SQL = r"""\set n random(1, 2000)
SELECT * FROM bench_sessions WHERE friendly_id = 'session_seed-' || :n;
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--processes", default="",
                        help="NAME=PID,...: the servers and services whose CPU per create is counted")
    parser.add_argument("--output")
    options = parser.parse_args()
    auth = {"Authorization": f"Bearer {options.api_key}"}
    psql = ["psql", "-q", "-v", "ON_ERROR_STOP=1", options.database_url, "-c"]
    subprocess.run(psql + ["DROP TABLE IF EXISTS bench_sessions; CREATE TABLE bench_sessions (LIKE sessions INCLUDING ALL);"
                           "INSERT INTO bench_sessions (id, friendly_id, type, organization_id, project_id,"
                           " runtime_environment_id, environment_type) SELECT 'seed-' || n, 'session_seed-' || n, 'bench',"
                           " 'o', 'p', 'e', 'DEVELOPMENT' FROM generate_series(1, 2000) n"], check=True)

    with tempfile.TemporaryDirectory() as folder:
        create_script = os.path.join(folder, "create.lua")
        with open(create_script, "w") as handle:
            handle.write(CREATE_LUA)
        # Sessions to retrieve, made through the API.
        ids_path = os.path.join(folder, "ids.txt")
        with open(ids_path, "w") as ids:
            for index in range(200):
                request = urllib.request.Request(
                    options.url + "/api/v1/sessions", method="POST",
                    data=json.dumps({"type": "bench", "externalId": f"seed-{os.getpid()}-{index}"}).encode(),
                    headers={**auth, "Content-Type": "application/json"})
                with urllib.request.urlopen(request) as response:
                    ids.write(json.load(response)["id"] + "\n")
        retrieve_script = os.path.join(folder, "retrieve.lua")
        with open(retrieve_script, "w") as handle:
            handle.write(RETRIEVE_LUA % ids_path)

        def phase(name, run):
            benchlib.quiet()
            print(f"[bench] {name}", file=sys.stderr, flush=True)
            if options.warmup:
                run(options.warmup)
            return run(options.seconds)

        meter = benchlib.CPUMeter(dict(item.split("=") for item in options.processes.split(",") if item))

        def create(seconds):
            """One wrk run of creates, checked to have created a session for every answer; with
            --processes, also the CPU each process spent per create, once all of them are relayed
            and replicated."""
            before = meter.sample()
            result = benchlib.wrk(options.url, create_script, options.concurrency, seconds, auth)
            client = meter.client()
            if meter.processes:
                drain = subprocess.run(psql + [DRAIN_SQL], capture_output=True, text=True)
                if drain.returncode != 0:
                    sys.exit(f"[bench] {drain.stderr.strip()}")
                after = {**meter.sample(), "client": client}
                result["cpuMsPerOperation"] = meter.per_operation(before, after, result["requests"])
            created = int(subprocess.run(
                psql[:-1] + ["-tA", "-c", f"SELECT count(*) FROM sessions WHERE external_id LIKE 'bench-{result['run']}-%'"],
                check=True, capture_output=True, text=True).stdout)
            if created < result["requests"]:
                sys.exit(f"[bench] only {created} sessions for {result['requests']} answered creates: names repeated")
            return result

        rows = []
        created = phase("api create (wrk)", create)

        def insert(seconds):
            before = meter.sample()
            rate, p50, p99, transactions = pgbench(options.database_url, INSERT_SQL, options.concurrency, seconds)
            spent = meter.per_operation(before, meter.sample(), transactions)
            return rate, p50, p99, {"postgres": spent["postgres"], "client": spent["client"]} if meter.processes else None

        inserted = phase("pg insert (pgbench)", insert)
        rows.append(("create", created, inserted[:3]))
        ours = phase("api retrieve (wrk)", lambda s: benchlib.wrk(options.url, retrieve_script, options.concurrency, s, auth))
        raw = phase("pg select (pgbench)", lambda s: pgbench(options.database_url, SELECT_SQL, options.concurrency, s)[:3])
        rows.append(("retrieve", ours, raw))

        def healthz(seconds):
            before = meter.sample()
            result = benchlib.wrk(options.url + "/healthz", None, options.concurrency, seconds, {})
            if meter.processes:
                result["cpuMsPerOperation"] = meter.per_operation(before, meter.sample(), result["requests"])
            return result

        floor = phase("http floor: GET /healthz (wrk)", healthz)
    subprocess.run(psql + ["DROP TABLE bench_sessions"], check=True)

    print(f"control plane, concurrency {options.concurrency}, {options.seconds} s per phase, {os.cpu_count()} cores")
    print(f"{'metric':<9}{'ours ops/s':>11}{'p50 ms':>8}{'p99 ms':>8} |{'raw PG ops/s':>13}{'p50 ms':>8}{'p99 ms':>8} |{'ours/raw':>9}")
    results = []
    for metric, ours, (raw_rate, raw_p50, raw_p99) in rows:
        rate, p50, p99, errors = ours["opsPerSecond"], ours["p50Ms"], ours["p99Ms"], ours["errors"]
        ratio = rate / raw_rate
        print(f"{metric:<9}{rate:>11.0f}{p50:>8.2f}{p99:>8.2f} |{raw_rate:>13.0f}{raw_p50:>8.2f}{raw_p99:>8.2f} |{ratio:>8.0%}")
        if errors:
            print(f"  ({errors} responses of {metric} were not 2xx)")
        results.append({"metric": metric, "ours": {"opsPerSecond": rate, "p50Ms": p50, "p99Ms": p99, "errors": errors},
                        "raw": {"opsPerSecond": raw_rate, "p50Ms": raw_p50, "p99Ms": raw_p99}, "ratio": ratio})
    floor_rate, floor_p50, floor_p99 = floor["opsPerSecond"], floor["p50Ms"], floor["p99Ms"]
    print(f"{'floor':<9}{floor_rate:>11.0f}{floor_p50:>8.2f}{floor_p99:>8.2f} |  GET /healthz: the most this server answers here")
    cpu = None
    if meter.processes:
        front = ("control-plane", "client")
        cpu = {"create": created["cpuMsPerOperation"], "insert": inserted[3],
               "healthz": {name: floor["cpuMsPerOperation"][name] for name in front}}
        # What a create costs everything but the control plane and the load generator: the most
        # creates a second these cores could give if those two cost nothing, or only what they
        # spend on a request that does no work.
        rest = sum(spent for name, spent in cpu["create"].items() if name not in front)
        cpu["ceilingOpsPerSecond"] = os.cpu_count() * 1000 / rest
        cpu["healthzCeilingOpsPerSecond"] = os.cpu_count() * 1000 / (rest + sum(cpu["healthz"].values()))
        print("CPU ms per operation (user + system; a create's until its event is relayed and replicated):")
        for metric, spent in (("create", cpu["create"]), ("INSERT", cpu["insert"]), ("healthz", cpu["healthz"])):
            parts = "  ".join(f"{name} {ms:.3f}" for name, ms in sorted(spent.items(), key=lambda item: -item[1]))
            print(f"  {metric:<8}{parts}  | total {sum(spent.values()):.3f}")
        insert_rate = rows[0][2][0]
        print(f"A create costs the rest of the machine {rest:.3f} ms. On {os.cpu_count()} cores that allows at most "
              f"{cpu['ceilingOpsPerSecond']:,.0f} creates/s ({cpu['ceilingOpsPerSecond'] / insert_rate:.0%} of INSERT) "
              f"if the control plane and the client cost nothing, and {cpu['healthzCeilingOpsPerSecond']:,.0f}/s "
              f"({cpu['healthzCeilingOpsPerSecond'] / insert_rate:.0%}) if they cost what GET /healthz does.")
    if options.output:
        with open(options.output, "w") as handle:
            json.dump({"benchmark": "control-plane", "concurrency": options.concurrency, "seconds": options.seconds,
                       "cores": os.cpu_count(), "results": results,
                       "floor": {"opsPerSecond": floor_rate, "p50Ms": floor_p50, "p99Ms": floor_p99},
                       **({"cpuMsPerOperation": cpu} if cpu else {})}, handle, indent=2)
    if any(row["ours"]["errors"] for row in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
