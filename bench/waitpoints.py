#!/usr/bin/env python3
"""Waitpoints benchmark: with many waiters pending across many channels, one append per channel;
measures append sent -> waitpoint completed -> the waiter's long-poll returns (p50/p99), and
checks that every waiter completed with its channel's record.

Usage: waitpoints.py --realtime URL --waitpoints URL --control-plane URL --api-key KEY
                     [--channels 100] [--waiters 10] [--rounds 3] [--output FILE]
"""
import argparse
import asyncio
import json
import os
import random
import sys
import time
import urllib.parse

from benchlib import create_session, open_connection, percentile, post, request


async def round_trip(options, sessions):
    """Registers waiters on every channel, long-polls each, appends once per channel."""
    key = options.api_key
    waitpoints_host = urllib.parse.urlsplit(options.waitpoints).netloc
    waiters = []  # (session, waitpoint id)
    reader, writer = await open_connection(options.waitpoints)
    for session in sessions:
        for _ in range(options.waiters):
            body = json.dumps({"session": session, "io": "in", "timeout": "5m"}).encode()
            status, payload = await request(reader, writer, waitpoints_host, "POST",
                                            "/api/v1/runs/run_bench/session-streams/wait", key, body,
                                            "application/json")
            if status != 200:
                raise RuntimeError(f"wait answered {status}: {payload[:200]}")
            waiters.append((session, json.loads(payload)["waitpointId"]))
    writer.close()

    sent = {}
    results = []

    async def long_poll(session, waitpoint):
        poll_reader, poll_writer = await open_connection(options.waitpoints)
        status, payload = await request(poll_reader, poll_writer, waitpoints_host, "GET",
                                        f"/api/v1/waitpoints/{waitpoint}/wait?timeout=120", key)
        arrived = time.monotonic_ns()
        poll_writer.close()
        item = json.loads(payload)
        results.append((session, item["status"], item.get("output", {}).get("value"), (arrived - sent.get(session, arrived)) / 1e6))

    polls = [asyncio.create_task(long_poll(session, waitpoint)) for session, waitpoint in waiters]
    await asyncio.sleep(2)  # every long-poll is open and waiting
    realtime_host = urllib.parse.urlsplit(options.realtime).netloc
    append_reader, append_writer = await open_connection(options.realtime)
    appends = []
    for session in sessions:
        sent[session] = time.monotonic_ns()
        await post(append_reader, append_writer, realtime_host, f"/realtime/v1/sessions/{session}/in/append", key,
                   f"go {session}".encode())
        appends.append((time.monotonic_ns() - sent[session]) / 1e6)
        await asyncio.sleep(0.01)
    append_writer.close()
    await asyncio.wait_for(asyncio.gather(*polls), 120)
    return results, appends


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realtime", required=True)
    parser.add_argument("--waitpoints", required=True)
    parser.add_argument("--control-plane", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--waiters", type=int, default=10, help="per channel")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output")
    options = parser.parse_args()
    tag = f"{os.getpid()}-{random.randint(0, 1 << 30)}"
    sessions = [create_session(options.control_plane, options.api_key, f"bench-wait-{tag}-{index}")
                for index in range(options.channels)]
    latencies, appends, wrong = [], [], 0
    for number in range(options.rounds):
        print(f"[bench] round {number + 1}/{options.rounds}: {options.channels * options.waiters} pending waiters "
              f"on {options.channels} channels, one append each", file=sys.stderr, flush=True)
        results, round_appends = asyncio.run(round_trip(options, sessions))
        appends += round_appends
        for session, status, value, latency in results:
            if status != "COMPLETED" or value != f"go {session}":
                wrong += 1
            latencies.append(latency)
    result = {"waiters": options.channels * options.waiters, "channels": options.channels, "rounds": options.rounds,
              "samples": len(latencies), "wrong": wrong,
              "p50Ms": percentile(latencies, 50), "p99Ms": percentile(latencies, 99),
              "appendP50Ms": percentile(appends, 50), "appendP99Ms": percentile(appends, 99)}
    print(f"waitpoints, {os.cpu_count()} cores")
    print(f"append -> waitpoint completed -> long-poll returns, {result['waiters']} pending waiters on "
          f"{result['channels']} channels: p50 {result['p50Ms']:.2f} ms, p99 {result['p99Ms']:.2f} ms "
          f"({result['samples']} samples, {wrong} wrong); the appends themselves: p50 {result['appendP50Ms']:.2f} ms, "
          f"p99 {result['appendP99Ms']:.2f} ms")
    if options.output:
        with open(options.output, "w") as handle:
            json.dump({"benchmark": "waitpoints", "cores": os.cpu_count(), "results": result}, handle, indent=2)
    if wrong:
        sys.exit(1)


if __name__ == "__main__":
    main()
