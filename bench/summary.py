#!/usr/bin/env python3
"""One table of a `make bench` run: every benchmark's headline next to the raw engine it rides on,
measured in the same run, with the ratio and the target. Reads bench/results/*-STAMP.json and
writes bench/results/summary-STAMP.json.

Usage: summary.py STAMP
"""
import json
import os
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def load(name, stamp, section="results"):
    path = os.path.join(RESULTS, f"{name}-{stamp}.json")
    if not os.path.exists(path):
        return None
    with open(path) as file:
        data = json.load(file)
    return data.get(section, data)  # replication.py writes its sections at the top level


def rows(stamp):
    """(metric, ours, raw engine, raw, kind, target) — kind: 'rate' (ours/raw as %) or 'latency' (×)."""
    control, realtime, waits, replication, raw = (load(name, stamp) for name in
                                                  ("control-plane", "realtime", "waitpoints", "replication", "raw"))
    out = []
    if control:
        for item in control:
            name, ours, base = item["metric"], item["ours"], item["raw"]
            engine = "PostgreSQL INSERT" if name == "create" else "PostgreSQL SELECT"
            out.append((f"session {name}, c=32 (ops/s)", ours["opsPerSecond"], engine, base["opsPerSecond"], "rate",
                        ">= 50%" if name == "create" else ""))
            out.append((f"session {name}, c=32 p99 (ms)", ours["p99Ms"], engine, base["p99Ms"], "latency",
                        "< 20 ms" if name == "create" else ""))
        insert = next(item["raw"]["opsPerSecond"] for item in control if item["metric"] == "create")
        floor = load("control-plane", stamp, "floor")
        if isinstance(floor, dict) and "opsPerSecond" in floor:
            out.append(("  HTTP floor: GET /healthz, c=32 (ops/s)", floor["opsPerSecond"], "PostgreSQL INSERT",
                        insert, "rate", ""))
        cpu = load("control-plane", stamp, "cpuMsPerOperation")
        if isinstance(cpu, dict) and "ceilingOpsPerSecond" in cpu:
            out.append(("  ceiling, control plane and client free (ops/s)", cpu["ceilingOpsPerSecond"],
                        "PostgreSQL INSERT", insert, "rate", ""))
            out.append(("  ceiling, control plane as GET /healthz (ops/s)", cpu["healthzCeilingOpsPerSecond"],
                        "PostgreSQL INSERT", insert, "rate", ""))
    delivery = (raw or {}).get("jetstreamDelivery")
    if realtime:
        one, many = realtime["append c=1"], realtime["append c=64"]
        out.append(("append, c=1 p50 (ms)", one["ours"]["p50Ms"], "JetStream publish+ack", one["raw"]["p50Ms"],
                    "latency", "<= 3x"))
        if "append c=1 X-Part-Id" in realtime:
            part = realtime["append c=1 X-Part-Id"]
            out.append(("  with X-Part-Id, c=1 p50 (ms)", part["ours"]["p50Ms"], "get + claim + publish",
                        part["raw"]["p50Ms"], "latency", ""))
        out.append(("append, c=64 (ops/s)", many["ours"]["opsPerSecond"], "JetStream publish+ack",
                    many["raw"]["opsPerSecond"], "rate", ""))
        for key, metric, target in (("delivery", "append -> SSE at 500/s p99 (ms)", "< 10 ms"),
                                    ("fanout", "fan-out to 1,000 SSE p99 (ms)", "< 100 ms")):
            if key in realtime:
                # The delivery benchmark measures the engine next to ours; older results did not.
                base = realtime[key].get("raw") or delivery
                out.append((metric, realtime[key]["p99Ms"], "JetStream -> ordered consumer",
                            base["p99Ms"] if base else None, "latency", target))
                probe = realtime[key].get("probe")
                if probe:
                    # Stalls of the machine itself show in the probe's max as in ours.
                    out.append(("  max, same seconds (ms)", realtime[key]["maxMs"], f"JetStream probe, {probe['rate']:.0f}/s beside",
                                probe["maxMs"], "latency", ""))
        out.append(("idle SSE subscriber (KiB)", realtime["fanout"]["idleKiBPerSubscriber"], "", None, "", ""))
    if waits:
        evalsha = (raw or {}).get("redisEvalsha", [None])[0]
        out.append(("waitpoint wake-up, 1,000 waiters p99 (ms)", waits["p99Ms"], "Redis EVALSHA",
                    evalsha["p99Ms"] if evalsha else None, "latency", "< 20 ms"))
    if replication:
        insert = (raw or {}).get("clickhouseInsert")
        out.append(("replication lag at 1,000 writes/s p99 (ms)", replication["lag"]["p99Ms"], "ClickHouse insert",
                    insert["p99Ms"] if insert else None, "latency", "< 1000 ms"))
        out.append((f"list over {replication['list']['sessions']:,} sessions p50 (ms)", replication["list"]["p50Ms"],
                    "", None, "", ""))
    return out


def ratio(ours, base, kind):
    if base in (None, 0) or ours is None or kind == "":
        return ""
    return f"{ours / base:.0%}" if kind == "rate" else f"{ours / base:.1f}x"


def main():
    stamp = sys.argv[1]
    table = rows(stamp)
    if not table:
        if load("raw", stamp):
            return print("summary: the raw engines alone have no headline to put next to them (see above)")
        sys.exit(f"summary: no results for {stamp} in {RESULTS}")
    header = ("metric", "ours", "raw engine", "raw", "ours/raw", "target")
    cells = [header] + [(m, f"{o:,.2f}" if o < 100 else f"{o:,.0f}", e, "" if b is None else
                         (f"{b:,.2f}" if b < 100 else f"{b:,.0f}"), ratio(o, b, k), t) for m, o, e, b, k, t in table]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\nmake bench {stamp} on {os.cpu_count()} cores (load generators on the same machine)")
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(w) if 0 < i < 5 and i != 2 else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))
    with open(os.path.join(RESULTS, f"summary-{stamp}.json"), "w") as file:
        json.dump({"benchmark": "summary", "stamp": stamp, "cores": os.cpu_count(),
                   "rows": [dict(zip(("metric", "ours", "rawEngine", "raw", "kind", "target"), row))
                            for row in table]}, file, indent=1)


if __name__ == "__main__":
    main()
