#!/usr/bin/env python3
"""Raw-engine baselines that the service benchmarks compare with, measured in the same run on
the same stack: JetStream publish -> ordered-consumer delivery (what realtime's SSE feed rides
on), Redis EVALSHA (what a waitpoint registration costs), ClickHouse insert (what a replicated
batch costs). PostgreSQL INSERT/SELECT and JetStream publish-with-ack are measured by
control_plane.py and realtime.py next to the service numbers they pair with.

Usage: raw.py --nats URL --redis URL --clickhouse URL --bench PATH/sessions-bench
              [--seconds 10] [--output FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from benchlib import jetstream_delivery, percentile


def redis_evalsha(options, clients):
    """redis-benchmark: EVALSHA of a one-line SADD script (the shape of a registry write)."""
    url = urllib.parse.urlsplit(options.redis)
    base = ["-h", url.hostname, "-p", str(url.port or 6379)]
    sha = subprocess.run(["redis-cli", *base, "SCRIPT", "LOAD", "return redis.call('SADD', KEYS[1], ARGV[1])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    requests = 20_000 if clients == 1 else 200_000
    out = subprocess.run(["redis-benchmark", *base, "-c", str(clients), "-n", str(requests), "--csv",
                          "EVALSHA", sha, "1", "bench:raw:__rand_int__", "member"],
                         check=True, capture_output=True, text=True).stdout
    header, row = [line.replace('"', "").split(",") for line in out.strip().splitlines()[-2:]]
    values = dict(zip(header, row))
    subprocess.run(["redis-cli", *base, "EVAL", "for _,k in ipairs(redis.call('KEYS','bench:raw:*')) do "
                    "redis.call('DEL',k) end return 0", "0"], check=True, capture_output=True)
    return {"clients": clients, "opsPerSecond": float(values["rps"]),
            "p50Ms": float(values["p50_latency_ms"]), "p99Ms": float(values["p99_latency_ms"])}


def clickhouse(url, query, body=b""):
    request = urllib.request.Request(url + "/?" + urllib.parse.urlencode({"query": query}), data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def clickhouse_insert(options):
    """One-row inserts back to back for `seconds`, then 1,000-row batches: latency and rows/s."""
    table = f"bench_raw_{os.getpid()}"
    clickhouse(options.clickhouse, f"CREATE TABLE {table} (id String, created_at DateTime64(3), body String) "
               "ENGINE = MergeTree ORDER BY (created_at, id)")
    try:
        latencies, deadline, n = [], time.monotonic() + options.seconds, 0
        while time.monotonic() < deadline:
            row = json.dumps({"id": f"r{n}", "created_at": time.time(), "body": "x" * 64}).encode()
            start = time.perf_counter()
            clickhouse(options.clickhouse, f"INSERT INTO {table} FORMAT JSONEachRow", row)
            latencies.append((time.perf_counter() - start) * 1000)
            n += 1
        batch = b"\n".join(json.dumps({"id": f"b{i}", "created_at": time.time(), "body": "x" * 64}).encode()
                           for i in range(1000))
        start, batches = time.perf_counter(), 0
        while time.perf_counter() - start < min(5, options.seconds):
            clickhouse(options.clickhouse, f"INSERT INTO {table} FORMAT JSONEachRow", batch)
            batches += 1
        rows_per_second = batches * 1000 / (time.perf_counter() - start)
    finally:
        clickhouse(options.clickhouse, f"DROP TABLE {table}")
    return {"inserts": n, "p50Ms": percentile(latencies, 50), "p99Ms": percentile(latencies, 99),
            "batchRowsPerSecond": rows_per_second}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--clickhouse", required=True)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--output")
    options = parser.parse_args()
    results = {}
    print("raw: JetStream publish -> ordered consumer at 500/s", file=sys.stderr, flush=True)
    results["jetstreamDelivery"] = jetstream_delivery(options.bench, options.nats, options.seconds)
    print("raw: Redis EVALSHA, 1 and 32 clients", file=sys.stderr, flush=True)
    results["redisEvalsha"] = [redis_evalsha(options, 1), redis_evalsha(options, 32)]
    print("raw: ClickHouse insert, 1 row and 1,000-row batches", file=sys.stderr, flush=True)
    results["clickhouseInsert"] = clickhouse_insert(options)
    d, (r1, r32), c = results["jetstreamDelivery"], results["redisEvalsha"], results["clickhouseInsert"]
    print(f"JetStream publish -> ordered consumer at 500/s: p50 {d['p50Ms']:.2f} ms, p99 {d['p99Ms']:.2f} ms "
          f"({int(d['received'])}/{int(d['messages'])})")
    print(f"Redis EVALSHA: c=1 {r1['opsPerSecond']:.0f}/s p50 {r1['p50Ms']:.3f} ms p99 {r1['p99Ms']:.3f} ms; "
          f"c=32 {r32['opsPerSecond']:.0f}/s p99 {r32['p99Ms']:.3f} ms")
    print(f"ClickHouse insert: 1 row p50 {c['p50Ms']:.2f} ms p99 {c['p99Ms']:.2f} ms; "
          f"1,000-row batches {c['batchRowsPerSecond']:.0f} rows/s")
    if options.output:
        with open(options.output, "w") as file:
            json.dump({"benchmark": "raw", "seconds": options.seconds, "cores": os.cpu_count(),
                       "results": results}, file, indent=1)


if __name__ == "__main__":
    main()
