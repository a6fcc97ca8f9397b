#!/usr/bin/env python3
"""Waitpoints benchmark: with many waiters pending across many channels, one append per channel;
measures append sent -> waitpoint completed -> the waiter's long-poll returns (p50/p99), and
checks that every waiter completed with its channel's record. The load runs in sessions-bench
(one NIO event-loop thread), so the client costs little next to the servers on this machine.

Usage: waitpoints.py --realtime URL --waitpoints URL --control-plane URL --api-key KEY --bench BIN
                     [--channels 100] [--waiters 10] [--rounds 3] [--output FILE]
"""
import argparse
import json
import os
import random
import subprocess
import sys

from benchlib import create_session


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realtime", required=True)
    parser.add_argument("--waitpoints", required=True)
    parser.add_argument("--control-plane", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--bench", required=True, help="the sessions-bench executable")
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--waiters", type=int, default=10, help="per channel")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output")
    options = parser.parse_args()
    tag = f"{os.getpid()}-{random.randint(0, 1 << 30)}"
    sessions = [create_session(options.control_plane, options.api_key, f"bench-wait-{tag}-{index}")
                for index in range(options.channels)]
    out = subprocess.run([options.bench, "--mode", "wait", "--url", options.realtime,
                          "--waitpoints-url", options.waitpoints, "--api-key", options.api_key,
                          "--sessions", ",".join(sessions), "--waiters", str(options.waiters),
                          "--rounds", str(options.rounds)],
                         check=True, stdout=subprocess.PIPE, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    result = {"waiters": int(r["waiters"]), "channels": int(r["channels"]), "rounds": int(r["rounds"]),
              "samples": int(r["samples"]), "wrong": int(r["wrong"]), "p50Ms": r["p50Ms"], "p99Ms": r["p99Ms"],
              "appendP50Ms": r["appendP50Ms"], "appendP99Ms": r["appendP99Ms"]}
    print(f"waitpoints, {os.cpu_count()} cores")
    print(f"append -> waitpoint completed -> long-poll returns, {result['waiters']} pending waiters on "
          f"{result['channels']} channels: p50 {result['p50Ms']:.2f} ms, p99 {result['p99Ms']:.2f} ms "
          f"({result['samples']} samples, {result['wrong']} wrong); the appends themselves: "
          f"p50 {result['appendP50Ms']:.2f} ms, p99 {result['appendP99Ms']:.2f} ms")
    if options.output:
        with open(options.output, "w") as handle:
            json.dump({"benchmark": "waitpoints", "cores": os.cpu_count(), "results": result}, handle, indent=2)
    if result["wrong"] or result["samples"] != options.rounds * options.channels * options.waiters:
        sys.exit(1)


if __name__ == "__main__":
    main()
