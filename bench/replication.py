#!/usr/bin/env python3
"""Replication and list benchmark: end-to-end replication lag (PostgreSQL commit -> row visible
in ClickHouse) at a sustained session write rate, and list latency for filtered pages over a
large sessions_v1 (rows generated straight into ClickHouse and PostgreSQL).

Usage: replication.py --database-url URL --clickhouse URL --control-plane URL --api-key KEY
                      --environment ID --organization ID --project ID [--rate 1000] [--seconds 10]
                      [--sessions 1000000] [--output FILE]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from benchlib import percentile

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


def clickhouse(url, sql):
    with urllib.request.urlopen(urllib.request.Request(url + "/", data=sql.encode(), method="POST")) as response:
        return response.read().decode().strip()


def replication_lag(options, tag):
    """pgbench inserts at a fixed rate (logging each commit); a poller watches ClickHouse's count."""
    script = f"""\\set n random(1, 1000000000000)
INSERT INTO sessions (id, friendly_id, type, organization_id, project_id, runtime_environment_id, environment_type)
VALUES ('{tag}-' || :client_id || '-' || :n, 'session_{tag}-' || :client_id || '-' || :n, '{tag}', 'o', 'p', '{tag}',
        'DEVELOPMENT');
"""
    seen = []  # (monotonic seconds, wall seconds, count)
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            count = int(clickhouse(options.clickhouse, f"SELECT count() FROM sessions_v1 WHERE type = '{tag}'") or 0)
            seen.append((time.time(), count))
            time.sleep(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "insert.sql")
        with open(path, "w") as handle:
            handle.write(script)
        subprocess.run([PGBENCH, "-n", "-c", "4", "-j", "2", "-T", str(options.seconds), "-R", str(options.rate),
                        "-f", path, "-l", "--log-prefix", os.path.join(folder, "log"), options.database_url],
                       check=True, capture_output=True, cwd=folder)
        commits = []
        for name in os.listdir(folder):
            if name.startswith("log"):
                with open(os.path.join(folder, name)) as log:
                    for line in log:
                        fields = line.split()
                        if len(fields) >= 6:
                            commits.append(int(fields[4]) + int(fields[5]) / 1e6)
    deadline = time.time() + 60
    while (not seen or seen[-1][1] < len(commits)) and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    poller.join()
    commits.sort()
    lags, index = [], 0
    for k, committed in enumerate(commits, start=1):
        while index < len(seen) and seen[index][1] < k:
            index += 1
        if index == len(seen):
            break
        lags.append((seen[index][0] - committed) * 1000)
    return {"rate": options.rate, "rows": len(commits), "replicated": seen[-1][1] if seen else 0,
            "p50Ms": percentile(lags, 50), "p99Ms": percentile(lags, 99)}


LIST_LUA = """
queries = {"filter[status]=ACTIVE&page[size]=20", "filter[type]=chat&page[size]=50", "filter[tags]=t7&page[size]=20",
           "filter[createdAt][period]=7d&page[size]=100", "page[size]=20"}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/api/v1/sessions?" .. queries[(counter % #queries) + 1])
end
"""


def list_latency(options):
    env, org, project = options.environment, options.organization, options.project
    existing = int(clickhouse(options.clickhouse, f"SELECT count() FROM sessions_v1 WHERE environment_id = '{env}'") or 0)
    if existing < options.sessions:
        print(f"[bench] generating {options.sessions} sessions in ClickHouse and PostgreSQL", file=sys.stderr, flush=True)
        clickhouse(options.clickhouse, f"""INSERT INTO sessions_v1 (environment_id, organization_id, project_id,
            session_id, environment_type, friendly_id, type, tags, created_at, updated_at, _version)
            SELECT '{env}', '{org}', '{project}', 'gen' || leftPad(toString(number), 8, '0'), 'DEVELOPMENT',
                'session_gen' || leftPad(toString(number), 8, '0'), ['chat', 'task', 'agent'][number % 3 + 1],
                ['t' || toString(number % 10)], now64(3) - toIntervalSecond(number), now64(3) - toIntervalSecond(number), 1
            FROM numbers({options.sessions})""")
        subprocess.run(["psql", "-q", options.database_url, "-c",
                        f"""INSERT INTO sessions (id, friendly_id, type, tags, organization_id, project_id,
                            runtime_environment_id, environment_type, created_at)
                            SELECT 'gen' || lpad(n::text, 8, '0'), 'session_gen' || lpad(n::text, 8, '0'),
                                (ARRAY['chat', 'task', 'agent'])[n % 3 + 1], ARRAY['t' || (n % 10)], '{org}', '{project}',
                                '{env}', 'DEVELOPMENT', now() - n * interval '1 second'
                            FROM generate_series(0, {options.sessions - 1}) n ON CONFLICT DO NOTHING"""],
                       check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "list.lua")
        with open(script, "w") as handle:
            handle.write(LIST_LUA)
        output = subprocess.run(["wrk", "-t2", "-c4", f"-d{options.seconds}s", "--latency", "-s", script,
                                 "-H", f"Authorization: Bearer {options.api_key}", options.control_plane],
                                check=True, capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def pct(label):
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", output, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"sessions": options.sessions, "opsPerSecond": rate, "p50Ms": pct("50"), "p99Ms": pct("99"),
            "errors": int(errors.group(1)) if errors else 0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--database-url", "--clickhouse", "--control-plane", "--api-key", "--environment",
                 "--organization", "--project"):
        parser.add_argument(name, required=True)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--output")
    options = parser.parse_args()
    print(f"[bench] replication lag at {options.rate} session writes/s", file=sys.stderr, flush=True)
    lag = replication_lag(options, f"lag{os.getpid()}")
    print(f"[bench] list latency over {options.sessions} sessions", file=sys.stderr, flush=True)
    listing = list_latency(options)
    print(f"replication, {os.cpu_count()} cores")
    print(f"lag at {lag['rate']} writes/s: p50 {lag['p50Ms']:.0f} ms, p99 {lag['p99Ms']:.0f} ms "
          f"({lag['replicated']}/{lag['rows']} rows replicated)")
    print(f"list over {listing['sessions']} sessions (wrk, 4 connections, 5 filtered queries): "
          f"{listing['opsPerSecond']:.0f} pages/s, p50 {listing['p50Ms']:.1f} ms, p99 {listing['p99Ms']:.1f} ms")
    if options.output:
        with open(options.output, "w") as handle:
            json.dump({"benchmark": "replication", "cores": os.cpu_count(), "lag": lag, "list": listing}, handle, indent=2)
    if lag["replicated"] < lag["rows"] or listing["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
