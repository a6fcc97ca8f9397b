"""Helpers shared by the benchmarks: bringing the machine to rest, percentiles, the control plane's create,
wrk, raw JetStream delivery."""
import json
import os
import re
import resource
import subprocess
import sys
import time
import urllib.request


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


def quiet(limit=60):
    """Brings the machine to rest before a measurement, so that it does not measure the end of the
    previous one's work: PostgreSQL's dirty buffers written out (CHECKPOINT, when
    SESSIONS_DATABASE_URL is set), the page cache written back, then waits (at most `limit`
    seconds) until under 15% of the CPUs are busy over a second (a consumer or the replicator
    catching up, ClickHouse merging parts). Without it, append -> SSE right after the
    control-plane benchmark's ~12,000 creates had a p99 of 32 ms, against 5 ms from rest."""
    database_url = os.environ.get("SESSIONS_DATABASE_URL")
    if database_url:
        subprocess.run(["psql", "-qX", database_url, "-c", "CHECKPOINT"], check=True, capture_output=True)
    with open("/proc/meminfo") as meminfo:
        dirty = next(int(line.split()[1]) for line in meminfo if line.startswith("Dirty:")) / 1024
    os.sync()
    print(f"[bench] checkpointed, wrote back {dirty:.0f} MB of dirty pages", file=sys.stderr)

    def sample():
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)

    start = time.monotonic()
    while True:
        idle0, total0 = sample()
        time.sleep(1)
        idle1, total1 = sample()
        busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
        waited = time.monotonic() - start
        if busy < 0.15 or waited > limit:
            print(f"[bench] machine {'quiet' if busy < 0.15 else 'still busy'} after {waited:.0f} s ({busy:.0%} busy)",
                  file=sys.stderr, flush=True)
            return


def create_session(control_plane, key, external_id):
    request = urllib.request.Request(
        control_plane + "/api/v1/sessions", method="POST",
        data=json.dumps({"type": "bench", "externalId": external_id}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)["id"]


def jetstream_delivery(bench, nats, seconds):
    """Raw JetStream: sessions-bench publishes at 500/s while an ordered consumer reads."""
    out = subprocess.run([bench, "--mode", "delivery", "--nats", nats, "--rate", "500", "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# wrk runs a script in every thread with the same random sequence: a script that names things
# (externalIds, part ids) starts with this, and names them after `prefix`, unique per run and thread.
THREAD_PREFIX_LUA = """
local threads = 0
function setup(thread)
  thread:set("prefix", os.getenv("BENCH_RUN") .. "-" .. threads)
  threads = threads + 1
end
"""


def wrk(url, script, concurrency, seconds, headers):
    """Runs wrk, with a Lua script or none, under a run name of its own (BENCH_RUN).

    Returns opsPerSecond, p50Ms, p99Ms, errors (non-2xx answers), requests (answered) and run.
    """
    run = f"{os.getpid()}-{time.time_ns()}"
    command = ["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{seconds}s", "--latency"]
    command += ["-s", script] if script else []
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], check=True, capture_output=True, text=True,
                            env={**os.environ, "BENCH_RUN": run}).stdout

    def percentile_ms(label):
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", output, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"opsPerSecond": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "p50Ms": percentile_ms("50"), "p99Ms": percentile_ms("99"),
            "errors": int(errors.group(1)) if errors else 0,
            "requests": int(re.search(r"(\d+) requests in", output).group(1)), "run": run}


class CPUMeter:
    """CPU time (user + system, seconds) spent by named processes and by this script's load
    generators, read from /proc: a process's own time, the time of its children now alive, and
    that of the children it has reaped (PostgreSQL's backends end with their connections)."""

    def __init__(self, processes):
        self.processes = {name: int(pid) for name, pid in processes.items()}
        self.tick = os.sysconf("SC_CLK_TCK")

    def _times(self):
        """pid -> (ppid, own ticks, reaped children's ticks) for every process now alive."""
        times = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended while we looked
            times[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
        return times

    def sample(self):
        times = self._times() if self.processes else {}
        sample = {}
        for name, pid in self.processes.items():
            if pid not in times:
                raise RuntimeError(f"{name} (pid {pid}) is not running")
            _, own, reaped = times[pid]
            children = sum(ticks for ppid, ticks, _ in times.values() if ppid == pid)
            sample[name] = (own + reaped + children) / self.tick
        sample["client"] = self.client()
        return sample

    @staticmethod
    def client():
        """The CPU time of this script's load generators (the children it has waited for)."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    @staticmethod
    def per_operation(before, after, operations):
        """Milliseconds of CPU per operation, by process, between two samples."""
        return {name: (after[name] - before[name]) * 1000 / max(1, operations) for name in after}
