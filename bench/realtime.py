#!/usr/bin/env python3
"""Realtime benchmark: appends through the HTTP API (wrk) side by side with raw JetStream
publish-with-ack (sessions-bench, the same NATS client library realtime uses) in the same run —
for appends with a part id, the engine operations they make (a direct get and a claim, then the record);
append -> SSE delivery latency at a fixed rate; fan-out of one channel to many SSE subscribers
(every record to every subscriber, delivery percentiles, resident memory per idle subscriber) —
both driven by sessions-bench's SSE load generator (HdrHistogram percentiles).

Usage: realtime.py --url URL --control-plane URL --api-key KEY --nats URL --bench BIN --pid PID
                   [--seconds 10] [--subscribers 1000] [--output FILE]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

from benchlib import THREAD_PREFIX_LUA, create_session, jetstream_delivery, quiet, wrk


APPEND_LUA = THREAD_PREFIX_LUA + """
paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
part_ids = %s
counter = 0
request = function()
  local path = paths[math.random(1, #paths)]
  local headers = {["Content-Type"] = "text/plain", ["Authorization"] = wrk.headers["Authorization"]}
  if part_ids then
    counter = counter + 1
    headers["X-Part-Id"] = prefix .. "-" .. counter
  end
  return wrk.format("POST", path, headers, '{"bench":"0123456789012345678901234567890123456789"}')
end
"""

# (name, channels, concurrency, a fresh X-Part-Id on every append)
APPENDS = (("append c=1", 1, 1, False), ("append c=1 X-Part-Id", 1, 1, True), ("append c=64", 64, 64, False))


def raw_jetstream(bench, nats, concurrency, seconds, part_claims):
    """Raw publish-with-ack; with `part_claims`, each operation is the engine's work of an append
    with a part id (a direct get and a claim on the part's subject, then the record)."""
    command = [bench, "--nats", nats, "--concurrency", str(concurrency), "--seconds", str(seconds)]
    output = subprocess.run(command + (["--part-claims"] if part_claims else []),
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def sse_load(options, session, subscribers, rate, writers, probe=False):
    """sessions-bench appends at `rate` while `subscribers` SSE streams follow (one event-loop
    thread, byte scanning: the client costs little next to the server). With `probe`, raw JetStream
    delivery at 50/s on a stream of its own over the same seconds: the machine's own tail then."""
    out = subprocess.run([options.bench, "--mode", "sse", "--url", options.url, "--api-key", options.api_key,
                          "--session", session, "--subscribers", str(subscribers), "--rate", str(rate),
                          "--concurrency", str(writers), "--seconds", str(options.seconds),
                          "--server-pid", str(options.pid)] + (["--nats", options.nats] if probe else []),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="realtime base URL")
    parser.add_argument("--control-plane", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--bench", required=True, help="the sessions-bench binary")
    parser.add_argument("--pid", type=int, required=True, help="realtime's pid, for resident memory")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--delivery-runs", type=int, default=1,
                        help="append -> SSE runs, one after another, each with the probe beside it")
    parser.add_argument("--output")
    options = parser.parse_args()
    say = lambda text: print(f"[bench] {text}", file=sys.stderr, flush=True)
    tag = f"{os.getpid()}-{random.randint(0, 1 << 30)}"
    results = {}
    auth = {"Authorization": f"Bearer {options.api_key}"}

    # First, while realtime has served nothing else: memory that earlier phases allocated and freed
    # would be reused by the subscribers and hide what they cost.
    quiet()
    say(f"fan-out: one channel to {options.subscribers} SSE subscribers at 10 appends/s")
    session = create_session(options.control_plane, options.api_key, f"bench-{tag}-fanout")
    f = sse_load(options, session, options.subscribers, 10, 1)
    results["fanout"] = {"subscribers": options.subscribers, "appends": int(f["appends"]),
                         "completeSubscribers": int(f["completeSubscribers"]), "p50Ms": f["p50Ms"],
                         "p99Ms": f["p99Ms"], "idleKiBPerSubscriber": f.get("idleKiBPerSubscriber", float("nan"))}

    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "append.lua")
        for name, channels, concurrency, part_ids in APPENDS:
            with open(script, "w") as handle:
                handle.write(APPEND_LUA % (os.path.join(folder, "paths.txt"), "true" if part_ids else "false"))
            with open(os.path.join(folder, "paths.txt"), "w") as paths:
                for index in range(channels):
                    session = create_session(options.control_plane, options.api_key, f"bench-{tag}-{name}-{index}")
                    paths.write(f"/realtime/v1/sessions/{session}/out/append\n")
            # Each phase from rest: the one before leaves waitpoints' consumer and write-back to finish.
            quiet()
            say(f"{name}: HTTP API (wrk) vs raw JetStream publish-with-ack (sessions-bench)")
            wrk(options.url, script, concurrency, 2, auth)
            ours = wrk(options.url, script, concurrency, options.seconds, auth)
            raw = raw_jetstream(options.bench, options.nats, concurrency, options.seconds, part_ids)
            results[name] = {"ours": ours, "raw": raw}

    # Four writers share the 500/s, each with one append in flight: one sequential writer would be
    # at its own limit (one append per round trip, 1.5-2 ms), so its queue would be the measurement.
    writers = 4
    quiet()
    say(f"append -> SSE delivery at 500 appends/s, {writers} writers")
    session = create_session(options.control_plane, options.api_key, f"bench-{tag}-delivery")
    # The engine's own delivery at the same rate, measured just before: the disk's fsync stalls
    # that make these tails come and go, so the two are compared over the same minute.
    raw = jetstream_delivery(options.bench, options.nats, options.seconds)
    d = sse_load(options, session, 1, 500, writers, probe=True)
    results["delivery"] = {"writers": writers, "appends": int(d["appends"]), "received": int(d["received"]),
                           "appendsPerSecond": d["appendsPerSecond"], "p50Ms": d["p50Ms"], "p99Ms": d["p99Ms"],
                           "maxMs": d["maxMs"], "appendP50Ms": d["appendP50Ms"], "appendP99Ms": d["appendP99Ms"],
                           "raw": {"p50Ms": raw["p50Ms"], "p99Ms": raw["p99Ms"]},
                           "probe": {"rate": d["probeRate"], "p50Ms": d["probeP50Ms"], "p99Ms": d["probeP99Ms"],
                                     "maxMs": d["probeMaxMs"]}}
    # More runs of the same load, back to back on the same stack: how often the tail goes over the
    # target, and whether the engine beside it stalled in those seconds too.
    runs = [d]
    for run in range(2, options.delivery_runs + 1):
        say(f"append -> SSE delivery, run {run}/{options.delivery_runs}")
        session = create_session(options.control_plane, options.api_key, f"bench-{tag}-delivery-{run}")
        runs.append(sse_load(options, session, 1, 500, writers, probe=True))
    results["deliveryRuns"] = [{"p99Ms": r["p99Ms"], "maxMs": r["maxMs"], "probeP99Ms": r["probeP99Ms"],
                                "probeMaxMs": r["probeMaxMs"], "received": int(r["received"]),
                                "appends": int(r["appends"])} for r in runs]

    cores = os.cpu_count()
    print(f"realtime, {options.seconds} s per phase, {cores} cores")
    print(f"{'metric':<21}{'ours ops/s':>11}{'p50 ms':>8}{'p99 ms':>8} |{'raw JS ops/s':>13}{'p50 ms':>8}{'p99 ms':>8} |{'p50 ours/raw':>13}")
    for name, *_ in APPENDS:
        ours, raw = results[name]["ours"], results[name]["raw"]
        print(f"{name:<21}{ours['opsPerSecond']:>11.0f}{ours['p50Ms']:>8.2f}{ours['p99Ms']:>8.2f} |"
              f"{raw['opsPerSecond']:>13.0f}{raw['p50Ms']:>8.2f}{raw['p99Ms']:>8.2f} |{ours['p50Ms'] / raw['p50Ms']:>12.1f}x")
    print("(the X-Part-Id row's raw operation is the engine work such an append makes: a direct get and a claim "
          "on the part's subject, then the record)")
    d = results["delivery"]
    print(f"append -> SSE delivery at {d['appendsPerSecond']:.0f}/s, {d['writers']} writers: p50 {d['p50Ms']:.2f} ms, "
          f"p99 {d['p99Ms']:.2f} ms ({d['received']}/{d['appends']} received); the append's own round trip: "
          f"p50 {d['appendP50Ms']:.2f} ms, p99 {d['appendP99Ms']:.2f} ms; raw JetStream publish -> ordered consumer "
          f"at 500/s just before: p50 {d['raw']['p50Ms']:.2f} ms, p99 {d['raw']['p99Ms']:.2f} ms; and at "
          f"{d['probe']['rate']:.0f}/s on its own stream during it: p50 {d['probe']['p50Ms']:.2f} ms, "
          f"p99 {d['probe']['p99Ms']:.2f} ms, max {d['probe']['maxMs']:.1f} ms (ours max {d['maxMs']:.1f} ms)")
    runs = results["deliveryRuns"]
    if len(runs) > 1:
        print(f"append -> SSE, {len(runs)} runs back to back (ours p99 / max | probe p99 / max, ms):")
        for index, r in enumerate(runs, 1):
            print(f"  run {index:>2}: {r['p99Ms']:7.2f} / {r['maxMs']:6.1f} | {r['probeP99Ms']:7.2f} / {r['probeMaxMs']:6.1f}")
        under = sorted(r["p99Ms"] for r in runs if r["p99Ms"] < 10)
        over = [r for r in runs if r["p99Ms"] >= 10]
        stalled = [r for r in over if r["probeP99Ms"] >= 10]
        print(f"  {len(under)} of {len(runs)} under 10 ms" +
              (f" (p99 median {under[len(under) // 2]:.2f} ms)" if under else "") +
              f"; {len(over)} over, {len(stalled)} of them with the probe's p99 over 10 ms in the same seconds")
    f = results["fanout"]
    print(f"fan-out to {f['subscribers']} subscribers: {f['completeSubscribers']} got all {f['appends']} records in order; "
          f"delivery p50 {f['p50Ms']:.1f} ms, p99 {f['p99Ms']:.1f} ms; {f['idleKiBPerSubscriber']:.0f} KiB resident per idle subscriber")
    if options.output:
        with open(options.output, "w") as handle:
            json.dump({"benchmark": "realtime", "seconds": options.seconds, "cores": cores, "results": results}, handle, indent=2)
    errors = any(results[name]["ours"]["errors"] for name, *_ in APPENDS)
    lost = any(r["received"] != r["appends"] for r in results["deliveryRuns"])
    if errors or lost or f["completeSubscribers"] != f["subscribers"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
