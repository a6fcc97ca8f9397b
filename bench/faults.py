#!/usr/bin/env python3
"""Fault drills: kill or disturb one part of a running deployment while a modest load runs, bring
it back, and check that nothing acknowledged was lost or duplicated.

Load during every drill (all through the ingress):
  writers  append to a few .out channels with X-Part-Id, retrying every failure or timeout with the
           same part id until acknowledged (and re-sending some acknowledged parts: same seqNum)
  readers  follow the same channels over SSE, resuming with Last-Event-ID after any disconnect
  waiters  POST /api/v1/runs/{run}/session-streams/wait (idempotencyKey, retried), long-poll
           GET /api/v1/waitpoints/{id}/wait, and an append to their session's .in wakes them
  creates  a steady stream of session creates (externalId, retried), every fifth one then closed

Checks after every drill: every acknowledged append is in its channel exactly once at its seqNum
(read back through the S2 JSON read and an SSE replay, tail from HEAD X-Last-Seq-Num); no part id
twice; every SSE reader ended at the channel's last seq having seen each record once, in order;
every waiter COMPLETED once with its record; every acknowledged create exists (closed ones
CLOSED) and is listed by GET /api/v1/sessions; ClickHouse sessions_v1 FINAL converged to
PostgreSQL; JetStream holds one session event per session write and one waitpoint event per
settled waitpoint; every service answers /readyz.

Usage: faults.py --dir STACK_DIR [--seconds 8] [--only NAME[,NAME…]]
       (the deployment comes from the environment scripts/drill-stack.sh exports)
"""
import argparse
import asyncio
import base64
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICES = ("control-plane", "realtime", "waitpoints", "replicator")

WRITERS = 8
CHANNELS = 4
READERS = 8
WAITERS = 20
CREATES_PER_SECOND = 5
REQUEST_TIMEOUT = 5.0
RECOVERY_SECONDS = 40.0  # how long retries may go on after the load window
READER_TIMEOUT_SECONDS = 20  # Timeout-Seconds sent by the SSE readers


def log(text):
    print(text, flush=True)


# --------------------------------------------------------------------------------------------
# A small HTTP/1.1 client (one connection per request; streamed reads for SSE)
# --------------------------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


async def read_head(reader):
    line = await reader.readline()
    if not line:
        raise ConnectionError("connection closed before a response")
    status = int(line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def body_chunks(reader, headers):
    """Yields the body as it arrives (chunked, Content-Length or until EOF)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise ConnectionError("connection closed inside the body")
            remaining -= len(data)
            yield data
    else:
        while data := await reader.read(65536):
            yield data


def request_bytes(base, method, path, headers, body):
    host = urllib.parse.urlsplit(base).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def http(base, method, path, headers=None, body=b"", timeout=REQUEST_TIMEOUT):
    parts = urllib.parse.urlsplit(base)
    if isinstance(body, str):
        body = body.encode()

    async def exchange():
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(request_bytes(base, method, path, headers or {}, body))
            await writer.drain()
            status, response_headers = await read_head(reader)
            data = b""
            if method != "HEAD" and status not in (204, 304):
                async for chunk in body_chunks(reader, response_headers):
                    data += chunk
            return Response(status, response_headers, data)
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)


class Stalled(Exception):
    pass


async def sse(base, path, headers, on_event, idle_limit):
    """Follows an event stream until it ends; on_event(event, id, data) returns True to stop.
    Raises Stalled when nothing (not even a ping) arrives for idle_limit seconds."""
    parts = urllib.parse.urlsplit(base)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), REQUEST_TIMEOUT)
    try:
        writer.write(request_bytes(base, "GET", path, {"Accept": "text/event-stream", **headers}, b""))
        await writer.drain()
        status, response_headers = await asyncio.wait_for(read_head(reader), REQUEST_TIMEOUT * 2)
        if status != 200:
            data = b""
            async for chunk in body_chunks(reader, response_headers):
                data += chunk
            return status, data
        buffer = b""
        chunks = body_chunks(reader, response_headers).__aiter__()
        while True:
            try:
                data = await asyncio.wait_for(chunks.__anext__(), idle_limit)
            except StopAsyncIteration:
                return 200, b""
            except asyncio.TimeoutError:
                raise Stalled(f"nothing for {idle_limit:.0f} s") from None
            buffer += data
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                event = event_id = None
                payload = []
                for line in block.split(b"\n"):
                    if line.startswith(b"event:"):
                        event = line[6:].strip().decode()
                    elif line.startswith(b"id:"):
                        event_id = line[3:].strip().decode()
                    elif line.startswith(b"data:"):
                        payload.append(line[5:].lstrip(b" "))
                if on_event(event, event_id, b"\n".join(payload)):
                    return 200, b""
    finally:
        writer.close()


# --------------------------------------------------------------------------------------------
# Deployment: URLs, servers, faults
# --------------------------------------------------------------------------------------------

class Deployment:
    def __init__(self, directory):
        env = os.environ
        self.dir = directory
        self.url = env["SESSIONS_URL"]
        self.key = env["SESSIONS_API_KEY"]
        self.auth = {"Authorization": f"Bearer {self.key}"}
        self.database_url = env["SESSIONS_DATABASE_URL"]
        self.clickhouse_url = env["SESSIONS_CLICKHOUSE_URL"]
        self.service_ports = {name: int(env[f"SESSIONS_{name.upper().replace('-', '_')}_PORT"]) for name in SERVICES}
        ports = dict(line.strip().split("=", 1) for line in open(os.path.join(directory, "stack.ports")) if "=" in line)
        self.redis_port = int(ports["REDIS_PORT"])
        self.nats_monitor = f"http://127.0.0.1:{ports['NATS_MONITOR_PORT']}"
        self.nats_port = int(ports["NATS_PORT"])
        self.log_file = open(os.path.join(directory, "logs", "faults-restarts.out"), "a")

    def pid(self, name, executable=None):
        """The pid in DIR/<name>.pid, only if it still runs `executable` (guards against reuse)."""
        try:
            pid = int(open(os.path.join(self.dir, f"{name}.pid")).read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe")).removesuffix(" (deleted)")
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            return None
        if executable and executable != exe and executable not in cmdline:
            return None
        return pid

    @staticmethod
    async def wait_gone(pid, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                state = open(f"/proc/{pid}/status").read()
                if "\nState:\tZ" in state:
                    return True
            except OSError:
                return True
            await asyncio.sleep(0.05)
        return False

    async def run(self, *command):
        process = await asyncio.create_subprocess_exec(*command, stdout=self.log_file, stderr=self.log_file,
                                                       cwd=ROOT)
        return await process.wait()

    async def signal(self, name, executable, sig):
        pid = self.pid(name, executable)
        if pid is None:
            raise RuntimeError(f"{name} is not running (no live pid in {self.dir}/{name}.pid)")
        os.kill(pid, sig)
        if not await self.wait_gone(pid):
            raise RuntimeError(f"{name} (pid {pid}) did not exit after {signal.Signals(sig).name}")
        return pid

    async def start_services(self):
        status = await self.run(os.path.join(ROOT, "scripts", "services.sh"), "start")
        if status != 0:
            raise RuntimeError(f"scripts/services.sh start failed ({status}); see {self.dir}/logs/")

    def stack_env(self):
        return open(os.path.join(self.dir, "stack.env")).read()

    async def start_stack(self):
        before = self.stack_env()
        status = await self.run(os.path.join(ROOT, "scripts", "stack.sh"), "start", self.dir, "--ports", "free")
        if status != 0:
            raise RuntimeError(f"scripts/stack.sh start failed ({status})")
        if self.stack_env() != before:
            raise RuntimeError("the restarted stack did not keep its ports:\n" + before + "---\n" + self.stack_env())

    async def ready(self, seconds=60):
        """Waits until every service answers /readyz with 200; returns the ones that do not."""
        deadline = time.monotonic() + seconds
        pending = set(SERVICES)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                try:
                    response = await http(f"http://127.0.0.1:{self.service_ports[name]}", "GET", "/readyz", timeout=2)
                    if response.status == 200:
                        pending.discard(name)
                except Exception:
                    pass
            if pending:
                await asyncio.sleep(0.2)
        return sorted(pending)

    async def redis(self, *command):
        process = await asyncio.create_subprocess_exec("redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port),
                                                       *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output, _ = await process.communicate()
        return output.decode().strip()

    async def psql(self, sql):
        process = await asyncio.create_subprocess_exec("psql", self.database_url, "-XtAq", "-F", "\t", "-c", sql,
                                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        output, error = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"psql: {error.decode().strip()}")
        return [line.split("\t") for line in output.decode().splitlines() if line]

    async def clickhouse(self, sql):
        response = await http(self.clickhouse_url, "POST", "/", body=sql.encode(), timeout=30)
        if response.status != 200:
            raise RuntimeError(f"clickhouse {response.status}: {response.body[:300]!r}")
        return [line.split("\t") for line in response.body.decode().splitlines() if line]

    async def stream_states(self):
        response = await http(self.nats_monitor, "GET", "/jsz?streams=true", timeout=5)
        states = {}
        for account in response.json().get("account_details", []):
            for stream in account.get("stream_detail", []):
                states[stream["name"]] = stream["state"]
        return states

    async def waitpoint_event_ids(self, state):
        """The waitpoint ids in the WAITPOINT_EVENTS messages (each holds 1-100), read one by one
        with JetStream's message-get API over a bare NATS connection."""
        sequences = range(state["first_seq"], state["last_seq"] + 1) if state["messages"] else range(0)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.nats_port)
        try:
            await reader.readline()  # INFO
            writer.write(b'CONNECT {"verbose":false,"headers":true}\r\nSUB _INBOX.faults.* 1\r\n')
            for seq in sequences:
                body = json.dumps({"seq": seq}).encode()
                writer.write(f"PUB $JS.API.STREAM.MSG.GET.WAITPOINT_EVENTS _INBOX.faults.{seq} {len(body)}\r\n".encode()
                             + body + b"\r\n")
            await writer.drain()
            ids, pending = set(), len(sequences)
            while pending:
                line = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
                if line == "PING":
                    writer.write(b"PONG\r\n")
                elif line.startswith("-ERR"):
                    raise RuntimeError(f"NATS said {line}")
                elif line.startswith(("MSG ", "HMSG ")):
                    fields = line.split()
                    size = int(fields[-1])
                    payload = (await reader.readexactly(size + 2))[int(fields[-2]) if line.startswith("H") else 0:size]
                    message = json.loads(payload).get("message")
                    if message:
                        event = json.loads(base64.b64decode(message["data"]))
                        ids.update(item["id"] for item in event["waitpoints"])
                    pending -= 1
            return ids
        finally:
            writer.close()


# Each fault returns a list of lines saying what it did.

def kill_service(name):
    async def fault(deployment, drill):
        pid = await deployment.signal(name, name, signal.SIGKILL)
        await asyncio.sleep(1.5)
        started = time.monotonic()
        await deployment.start_services()
        return [f"kill -9 {name} (pid {pid}); down 1.5 s; restarted with scripts/services.sh start "
                f"(ready after {time.monotonic() - started:.1f} s, new pid {deployment.pid(name, name)})"]
    return fault


async def restart_nats(deployment, drill):
    pid = await deployment.signal("nats", "nats-server", signal.SIGKILL)
    await asyncio.sleep(1.5)
    started = time.monotonic()
    await deployment.start_stack()
    return [f"kill -9 nats-server (pid {pid}); down 1.5 s; scripts/stack.sh start DIR restarted it on the same port "
            f"in {time.monotonic() - started:.1f} s (new pid {deployment.pid('nats', 'nats-server')})"]


async def flush_redis(deployment, drill):
    before = await deployment.redis("DBSIZE")
    answer = await deployment.redis("FLUSHALL")
    return [f"redis FLUSHALL ({before} keys before) -> {answer}"]


async def restart_clickhouse(deployment, drill):
    pid = await deployment.signal("clickhouse", "server.py", signal.SIGTERM)
    await asyncio.sleep(3)
    started = time.monotonic()
    await deployment.start_stack()
    return [f"SIGTERM ClickHouse dev server (pid {pid}); down 3 s; scripts/stack.sh start DIR restarted it on the "
            f"same port in {time.monotonic() - started:.1f} s"]


async def restart_postgres(deployment, drill):
    pid = deployment.pid("postgres", "postgres")
    if pid is None:
        raise RuntimeError("postgres is not running")
    lines = []
    os.kill(pid, signal.SIGINT)  # fast shutdown: end sessions, checkpoint, stop
    if not await deployment.wait_gone(pid, 10):
        children = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,args="], capture_output=True,
                                  text=True).stdout.strip().splitlines()
        drill.fail("PostgreSQL fast shutdown did not finish within 10 s; what is left of it: "
                   + "; ".join(line.strip() for line in children)
                   + " (a walsender waits for its client to confirm the WAL it sent)")
        os.kill(pid, signal.SIGQUIT)  # immediate; the shutdown checkpoint is already written
        if not await deployment.wait_gone(pid, 20):
            raise RuntimeError(f"postgres (pid {pid}) did not stop after SIGQUIT either")
        lines.append(f"PostgreSQL fast shutdown (SIGINT to postmaster pid {pid}) hung for 10 s; "
                     "stopped it with SIGQUIT (immediate)")
    else:
        lines.append(f"PostgreSQL fast shutdown (SIGINT to postmaster pid {pid})")
    await asyncio.sleep(1.5)
    started = time.monotonic()
    await deployment.start_stack()
    lines.append(f"down 1.5 s; scripts/stack.sh start DIR restarted it on the same port in "
                 f"{time.monotonic() - started:.1f} s")
    return lines


async def no_fault(deployment, drill):
    return ["no fault (baseline: the load and the checks alone)"]


DRILLS = [
    ("baseline", no_fault),
    ("kill-control-plane", kill_service("control-plane")),
    ("kill-realtime", kill_service("realtime")),
    ("kill-waitpoints", kill_service("waitpoints")),
    ("kill-replicator", kill_service("replicator")),
    ("restart-nats", restart_nats),
    ("flush-redis", flush_redis),
    ("restart-clickhouse", restart_clickhouse),
    ("restart-postgres", restart_postgres),
]


# --------------------------------------------------------------------------------------------
# One drill: load, fault, quiesce, checks
# --------------------------------------------------------------------------------------------

class Drill:
    def __init__(self, deployment, name, fault, seconds, tag):
        self.d = deployment
        self.name, self.fault, self.seconds, self.tag = name, fault, seconds, tag
        self.statuses = collections.defaultdict(collections.Counter)  # operation -> status/exception -> count
        self.failures = []  # strings: losses, duplicates, hangs
        self.notes = []
        self.stop_load = asyncio.Event()
        self.counts = collections.Counter()

    def fail(self, text):
        self.failures.append(text)

    def count(self, operation, outcome):
        self.statuses[operation][outcome] += 1

    async def call(self, operation, method, path, headers=None, body=b"", accept=(200,), timeout=REQUEST_TIMEOUT):
        """One attempt; returns the response when its status is in `accept`, else None."""
        try:
            response = await http(self.d.url, method, path, {**self.d.auth, **(headers or {})}, body, timeout)
        except asyncio.TimeoutError:
            self.count(operation, "timeout")
            return None
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as error:
            self.count(operation, type(error).__name__)
            return None
        self.count(operation, response.status)
        return response if response.status in accept else None

    async def until(self, operation, deadline, *args, **kwargs):
        """Retries one request until it is accepted or the deadline passes."""
        delay = 0.1
        while True:
            response = await self.call(operation, *args, **kwargs)
            if response is not None:
                return response
            if time.monotonic() > (deadline() if callable(deadline) else deadline):
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # ---------------------------------------------------------------- setup

    async def create_session(self, external_id, tags):
        body = json.dumps({"type": "faults", "externalId": external_id, "tags": tags})
        response = await self.until("create", time.monotonic() + 30, "POST", "/api/v1/sessions",
                                    {"Content-Type": "application/json"}, body, accept=(200, 201))
        if response is None:
            raise RuntimeError(f"could not create session {external_id} before the drill")
        return response.json()["id"]

    # ---------------------------------------------------------------- load

    async def writer(self, number, channel):
        n = 0
        while not self.stop_load.is_set():
            n += 1
            part = f"{self.tag}-w{number}-{n}"
            body = json.dumps({"w": number, "n": n})
            path = f"/realtime/v1/sessions/{channel}/out/append"
            response = await self.until("append", self.recovery_deadline, "POST", path,
                                        {"X-Part-Id": part, "Content-Type": "text/plain"}, body)
            if response is None:
                self.unacked_parts[channel].append(part)
                continue
            seq = response.json()["seqNum"]
            self.acked[channel][part] = seq
            self.acked_at[(channel, seq)] = time.monotonic()
            if n % 10 == 0:  # an acknowledged part sent again must answer the same seqNum and write nothing
                again = await self.until("append (re-send)", self.recovery_deadline, "POST", path,
                                         {"X-Part-Id": part, "Content-Type": "text/plain"}, body)
                self.counts["re-sends"] += 1
                if again is not None and again.json()["seqNum"] != seq:
                    self.fail(f"re-sent part {part} on {channel} answered seqNum {again.json()['seqNum']}, "
                              f"first ack said {seq}")
            await asyncio.sleep(0.1)

    def recovery_deadline(self):
        return (self.load_end or time.monotonic() + 3600) + RECOVERY_SECONDS

    async def reader(self, state, channel):
        """Follows the channel, resuming after any end or error with Last-Event-ID."""

        def on_event(event, event_id, data):
            if event != "batch":
                return False
            for record in json.loads(data)["records"]:
                seq = record["seq_num"]
                expected = state["last"] + 1
                if seq < expected:
                    state["errors"].append(f"seq {seq} delivered again (after {state['last']})")
                    continue
                if seq > expected:
                    state["errors"].append(f"gap: expected seq {expected}, got {seq}")
                state["last"] = seq
                state["seen"].append((seq, json.loads(record["body"]).get("id")))
                state["received_at"][seq] = time.monotonic()
            return state["target"] is not None and state["last"] >= state["target"]

        while True:
            headers = {"Timeout-Seconds": str(READER_TIMEOUT_SECONDS)}
            if state["last"] >= 0:
                headers["Last-Event-ID"] = str(state["last"])
            try:
                status, body = await sse(self.d.url, f"/realtime/v1/sessions/{channel}/out", {**self.d.auth, **headers},
                                         on_event, idle_limit=READER_TIMEOUT_SECONDS + 20)
                self.count("sse", status)
                if status != 200:
                    state["refused"].append(f"{status} {body[:120]!r}")
            except Stalled as error:
                self.count("sse", "stalled")
                state["stalls"].append(str(error))
            except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                self.count("sse", type(error).__name__)
            if state["target"] is not None and state["last"] >= state["target"]:
                return
            state["connections"] += 1
            await asyncio.sleep(0.2)

    async def waiter(self, number, session, start_delay):
        """Registers a waitpoint on session.in, long-polls it, and wakes it with one append."""
        await asyncio.sleep(start_delay)
        result = self.waiters[number] = {"session": session, "ids": set(), "polls": [], "expected": None,
                                         "mode": "append-after-wait" if number % 2 == 0 else "append-before-wait"}
        value = f"wake {self.tag} {number}"
        append_path = f"/realtime/v1/sessions/{session}/in/append"
        part = f"{self.tag}-wake-{number}"
        body = {"session": session, "io": "in", "timeout": "10m", "idempotencyKey": f"{self.tag}-wait-{number}"}
        if number % 2 == 1:  # the record is there before the wait: lastSeqNum makes it count
            appended = await self.until("wake append", self.recovery_deadline, "POST", append_path,
                                        {"X-Part-Id": part}, value)
            if appended is None:
                result["error"] = "the wake-up append was never acknowledged"
                return
            result["expected"] = value
            body["lastSeqNum"] = appended.json()["seqNum"] - 1
        registered = await self.until("wait", self.recovery_deadline, "POST",
                                      f"/api/v1/runs/run_{self.tag}_{number}/session-streams/wait",
                                      {"Content-Type": "application/json"}, json.dumps(body))
        if registered is None:
            result["error"] = "the wait was never registered"
            return
        waitpoint = registered.json()["waitpointId"]
        result["ids"].add(waitpoint)
        result["id"] = waitpoint

        async def wake():
            await asyncio.sleep(random.uniform(0.3, 1.5))
            appended = await self.until("wake append", self.recovery_deadline, "POST", append_path,
                                        {"X-Part-Id": part}, value)
            if appended is None:
                result["error"] = "the wake-up append was never acknowledged"
            else:
                result["expected"] = value

        waking = asyncio.create_task(wake()) if number % 2 == 0 else None
        while True:
            response = await self.call("long-poll", "GET", f"/api/v1/waitpoints/{waitpoint}/wait?timeout=5",
                                       timeout=15)
            if response is not None:
                item = response.json()
                if item["status"] != "PENDING":
                    result["polls"].append(item)
                    break
            if time.monotonic() > self.recovery_deadline():
                result["error"] = "still PENDING at the deadline"
                break
            if response is None:
                await asyncio.sleep(0.2)
        if waking:
            await waking
        # Registering again (same idempotency key) must name the same waitpoint.
        again = await self.until("wait (again)", self.recovery_deadline, "POST",
                                 f"/api/v1/runs/run_{self.tag}_{number}/session-streams/wait",
                                 {"Content-Type": "application/json"}, json.dumps(body))
        if again is not None:
            result["ids"].add(again.json()["waitpointId"])

    async def creator(self):
        tasks = []
        n = 0
        while not self.stop_load.is_set():
            n += 1
            tasks.append(asyncio.create_task(self.create_one(n)))
            await asyncio.sleep(1 / CREATES_PER_SECOND)
        await asyncio.gather(*tasks)

    async def create_one(self, n):
        external_id = f"{self.tag}-c{n}"
        self.creates[external_id] = None
        body = json.dumps({"type": "faults.create", "externalId": external_id, "tags": [f"drill-{self.tag}"]})
        response = await self.until("create", self.recovery_deadline, "POST", "/api/v1/sessions",
                                    {"Content-Type": "application/json"}, body, accept=(200, 201))
        if response is None:
            return
        self.creates[external_id] = response.json()["id"]
        if n % 5 == 0:
            closed = await self.until("close", self.recovery_deadline, "POST",
                                      f"/api/v1/sessions/{external_id}/close", {"Content-Type": "application/json"},
                                      json.dumps({"reason": "drill"}))
            if closed is not None:
                self.closed.add(external_id)

    # ---------------------------------------------------------------- the drill

    async def run(self):
        self.acked = collections.defaultdict(dict)  # channel -> part -> seq
        self.acked_at = {}
        self.unacked_parts = collections.defaultdict(list)
        self.waiters = {}
        self.creates = {}
        self.closed = set()
        self.load_end = None

        not_ready = await self.d.ready(60)
        if not_ready:
            self.fail(f"not ready before the drill: {', '.join(not_ready)}")
            return
        channels = [await self.create_session(f"{self.tag}-chan-{k}", [f"drill-{self.tag}-setup"])
                    for k in range(CHANNELS)]
        wait_sessions = [await self.create_session(f"{self.tag}-wait-{k}", [f"drill-{self.tag}-setup"])
                         for k in range(WAITERS)]
        self.setup_ids = set(channels) | set(wait_sessions)

        readers = [{"channel": channels[k % CHANNELS], "last": -1, "seen": [], "errors": [], "stalls": [],
                    "refused": [], "connections": 1, "target": None, "received_at": {}} for k in range(READERS)]
        reader_tasks = [asyncio.create_task(self.reader(state, state["channel"])) for state in readers]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        writer_tasks = [asyncio.create_task(self.writer(k, channels[k % CHANNELS])) for k in range(WRITERS)]
        creator_task = asyncio.create_task(self.creator())
        spread = max(1.0, self.seconds - 2.0)
        waiter_tasks = [asyncio.create_task(self.waiter(k, wait_sessions[k], k * spread / WAITERS))
                        for k in range(WAITERS)]

        await asyncio.sleep(2.0)
        fault_started = time.monotonic()
        try:
            for line in await self.fault(self.d, self):
                log(f"  did: {line}")
        except Exception as error:
            self.fail(f"the fault itself failed: {error}")
        fault_done = time.monotonic()
        self.load_end = max(started + self.seconds, fault_done + 3.0)
        await asyncio.sleep(max(0.0, self.load_end - time.monotonic()))
        self.stop_load.set()
        log(f"  load: {time.monotonic() - started:.1f} s ({fault_done - fault_started:.1f} s in the fault); "
            "waiting for retries to settle")

        await asyncio.gather(*writer_tasks, creator_task, *waiter_tasks)
        not_ready = await self.d.ready(30)
        if not_ready:
            self.fail(f"not ready 30 s after the drill: {', '.join(not_ready)}; checks skipped")
            for task in reader_tasks:
                task.cancel()
            await asyncio.gather(*reader_tasks, return_exceptions=True)
            return

        # Tails, then readers must reach them.
        tails = {}
        for channel in channels:
            response = await self.until("head", time.monotonic() + 20, "HEAD", f"/realtime/v1/sessions/{channel}/out")
            tails[channel] = int(response.headers.get("x-last-seq-num", "-2")) if response else None
        for state in readers:
            state["target"] = tails[state["channel"]] if tails[state["channel"]] is not None else -1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(s["last"] < s["target"] for s in readers):
            await asyncio.sleep(0.05)
        for task in reader_tasks:
            task.cancel()
        await asyncio.gather(*reader_tasks, return_exceptions=True)

        await self.check_channels(channels, tails, readers)
        await self.check_waiters()
        await self.check_creates()
        await self.check_replication()
        await self.check_events()

    # ---------------------------------------------------------------- checks

    async def read_s2(self, channel):
        """The whole channel through the S2 JSON read: [(seq, part id)]."""
        deadline = time.monotonic() + 20
        init = await self.until("initialize", deadline, "PUT", f"/realtime/v1/sessions/{channel}/out", accept=(202,))
        if init is None:
            raise RuntimeError("PUT (initialize) failed")
        token = init.headers["x-s2-access-token"]
        stream = urllib.parse.quote(init.headers["x-s2-stream-name"], safe="")
        endpoint = urllib.parse.urlsplit(init.headers["x-s2-endpoint"]).path
        records, seq = [], 0
        while True:
            response = await http(self.d.url, "GET", f"{endpoint}/streams/{stream}/records?seq_num={seq}&count=1000",
                                  {"Authorization": f"Bearer {token}"}, timeout=20)
            if response.status == 416:
                break
            if response.status != 200:
                raise RuntimeError(f"S2 read answered {response.status}: {response.body[:200]!r}")
            page = response.json()
            for record in page["records"]:
                records.append((record["seq_num"], json.loads(record["body"]).get("id")))
            seq = records[-1][0] + 1 if records else 0
            if not page["records"] or seq >= page["tail"]["seq_num"]:
                break
        return records

    async def replay(self, channel, after=None):
        """The channel (or what follows `after`) through a fresh SSE replay: [(seq, part id)]."""
        records = []

        def on_event(event, event_id, data):
            if event == "batch":
                for record in json.loads(data)["records"]:
                    records.append((record["seq_num"], json.loads(record["body"]).get("id")))
            return False

        headers = {**self.d.auth, "Timeout-Seconds": "1"}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        status, body = await sse(self.d.url, f"/realtime/v1/sessions/{channel}/out", headers, on_event, idle_limit=30)
        if status != 200:
            raise RuntimeError(f"SSE replay answered {status}: {body[:200]!r}")
        return records

    async def check_channels(self, channels, tails, readers):
        acked_total = sum(len(parts) for parts in self.acked.values())
        unacked_total = sum(len(parts) for parts in self.unacked_parts.values())
        self.counts["appends acked"] = acked_total
        if unacked_total:
            self.fail(f"{unacked_total} appends never acknowledged within {RECOVERY_SECONDS:.0f} s after the load "
                      f"(e.g. {next(p for parts in self.unacked_parts.values() for p in parts)})")
        records_total = 0
        for channel in channels:
            tail = tails[channel]
            if tail is None:
                self.fail(f"{channel}: HEAD never answered")
                continue
            try:
                s2 = await self.read_s2(channel)
                replay = await self.replay(channel)
            except Exception as error:
                self.fail(f"{channel}: read-back failed: {error}")
                continue
            records_total += len(s2)
            if [seq for seq, _ in s2] != list(range(len(s2))):
                self.fail(f"{channel}: S2 read seq numbers are not dense 0..{len(s2) - 1}")
            if len(s2) - 1 != tail:
                self.fail(f"{channel}: HEAD X-Last-Seq-Num {tail} but the S2 read holds {len(s2)} records")
            if replay != s2:
                self.fail(f"{channel}: an SSE replay ({len(replay)} records) differs from the S2 read ({len(s2)})")
            by_seq = dict(s2)
            parts = collections.Counter(part for _, part in s2)
            twice = [part for part, k in parts.items() if k > 1]
            if twice:
                self.fail(f"{channel}: {len(twice)} part ids stored more than once (e.g. {twice[0]}: seqs "
                          f"{[seq for seq, part in s2 if part == twice[0]]})")
            for part, seq in self.acked[channel].items():
                if by_seq.get(seq) != part:
                    self.fail(f"{channel}: acknowledged part {part} at seq {seq} but that seq holds "
                              f"{by_seq.get(seq)!r}" + (f"; the part is at {[s for s, p in s2 if p == part]}"
                                                       if part in parts else "; the part is missing (LOST)"))
            extra = [part for _, part in s2 if part not in self.acked[channel]]
            unacked = set(self.unacked_parts[channel])
            unexplained = [part for part in extra if part not in unacked]
            if unexplained:
                self.fail(f"{channel}: {len(unexplained)} records no writer sent (e.g. {unexplained[0]})")
            for state in (s for s in readers if s["channel"] == channel):
                if state["seen"] == s2 and not state["errors"]:
                    continue
                if state["errors"]:
                    self.fail(f"{channel}: a reader saw {len(state['errors'])} ordering errors: {state['errors'][:3]}")
                if state["last"] < tail:
                    stall = f"; stalls: {state['stalls'][:2]}" if state["stalls"] else ""
                    try:
                        rest = await self.replay(channel, after=state["last"])
                        there = f"a fresh resume from {state['last']} gets {len(rest)} more records"
                    except Exception as error:
                        there = f"a fresh resume failed: {error}"
                    self.fail(f"{channel}: a reader ended at seq {state['last']}, the channel's last is {tail} "
                              f"(HANG: {there}{stall})")
                elif state["seen"] != s2:
                    self.fail(f"{channel}: a reader's records differ from the stored channel")
        self.counts["records"] = records_total
        readers_ok = sum(1 for s in readers if not s["errors"] and s["last"] == tails.get(s["channel"]))
        self.counts["readers ok"] = readers_ok
        reconnects = sum(s["connections"] - 1 for s in readers)
        lags = []
        for state in readers:
            for seq, received in state["received_at"].items():
                acked = self.acked_at.get((state["channel"], seq))
                if acked is not None:
                    lags.append(max(0.0, received - acked))
        lag = f", slowest delivery after ack {max(lags):.2f} s" if lags else ""
        log(f"  checked appends: {acked_total} acknowledged, {records_total} records on {len(channels)} channels "
            f"(S2 read = SSE replay = HEAD), {self.counts['re-sends']} re-sent parts kept their seqNum; "
            f"readers: {readers_ok}/{len(readers)} at the tail with every record once in order "
            f"({reconnects} resumes{lag})")

    async def check_waiters(self):
        good = 0
        for number in range(WAITERS):
            result = self.waiters.get(number)
            if result is None:
                self.fail(f"waiter {number} never started")
                continue
            if "error" in result:
                self.fail(f"waiter {number} ({result['mode']}): {result['error']}"
                          + (f" ({result.get('id')})" if result.get("id") else ""))
                continue
            if len(result["ids"]) != 1:
                self.fail(f"waiter {number}: the same idempotency key gave waitpoints {sorted(result['ids'])}")
            waitpoint = result["id"]
            response = await self.until("waitpoint", time.monotonic() + 20, "GET", f"/api/v1/waitpoints/{waitpoint}")
            if response is None:
                self.fail(f"waiter {number}: GET {waitpoint} failed")
                continue
            item = response.json()
            output = item.get("output") or {}
            if item["status"] != "COMPLETED" or output.get("value") != result["expected"] or output.get("isError"):
                self.fail(f"waiter {number} ({result['mode']}, {waitpoint}): status {item['status']}, output "
                          f"{output.get('value')!r}, expected COMPLETED with {result['expected']!r}")
                continue
            if any(poll.get("completedAt") != item.get("completedAt") or poll.get("output") != item.get("output")
                   for poll in result["polls"]):
                self.fail(f"waiter {number} ({waitpoint}): the long-poll and a later read disagree")
                continue
            good += 1
        rows = await self.d.psql(f"SELECT idempotency_key, count(*), string_agg(status, ',') FROM waitpoints "
                                 f"WHERE idempotency_key LIKE '{self.tag}-wait-%' GROUP BY 1")
        if len(rows) != WAITERS or any(row[1] != "1" for row in rows):
            self.fail(f"waitpoint rows per idempotency key: {rows}")
        self.counts["waiters ok"] = good
        log(f"  checked waiters: {good}/{WAITERS} COMPLETED once with their own record "
            f"(half woken after the wait, half by a record already there); one row per idempotency key")

    async def check_creates(self):
        acked = {ext: sid for ext, sid in self.creates.items() if sid}
        missing_ack = [ext for ext, sid in self.creates.items() if not sid]
        self.counts["creates acked"] = len(acked)
        if missing_ack:
            self.fail(f"{len(missing_ack)} creates never acknowledged (e.g. {missing_ack[0]})")
        rows = await self.d.psql(f"SELECT external_id, friendly_id, closed_at IS NOT NULL FROM sessions "
                                 f"WHERE external_id ~ '^{self.tag}-c[0-9]+$'")
        in_pg = {row[0]: (row[1], row[2] == "t") for row in rows}
        for ext, sid in acked.items():
            row = in_pg.get(ext)
            if row is None:
                self.fail(f"acknowledged create {ext} ({sid}) is not in PostgreSQL (LOST)")
            elif row[0] != sid:
                self.fail(f"create {ext} acknowledged as {sid} but PostgreSQL has {row[0]}")
            elif (ext in self.closed) != row[1]:
                self.fail(f"session {ext}: closed acknowledged={ext in self.closed}, closed in PostgreSQL={row[1]}")
        stray = set(in_pg) - set(self.creates)
        if stray:
            self.fail(f"{len(stray)} sessions nobody created: {sorted(stray)[:3]}")
        # The list API (ClickHouse) must name exactly the acknowledged sessions, with their latest state.
        want = set(acked.values())
        deadline = time.monotonic() + 30
        listed, statuses = set(), {}
        while True:
            listed, statuses, error = set(), {}, None
            path = f"/api/v1/sessions?filter%5Btags%5D=drill-{self.tag}&page%5Bsize%5D=100"
            while path:
                response = await self.call("list", "GET", path, timeout=20)
                if response is None:
                    error = "list failed"
                    break
                page = response.json()
                for item in page["data"]:
                    if item["id"] in listed:
                        error = f"list returned {item['id']} twice"
                    listed.add(item["id"])
                    statuses[item["id"]] = item["status"]
                after = page["pagination"].get("next")
                path = (f"/api/v1/sessions?filter%5Btags%5D=drill-{self.tag}&page%5Bsize%5D=100"
                        f"&page%5Bafter%5D={urllib.parse.quote(after, safe='')}") if after else None
            if not error and listed == want or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        if error:
            self.fail(f"list: {error}")
        if listed != want:
            self.fail(f"list by tag after 30 s: {len(want - listed)} acknowledged sessions missing "
                      f"(e.g. {sorted(want - listed)[:2]}), {len(listed - want)} unexpected")
        wrong = [ext for ext, sid in acked.items() if sid in statuses
                 and statuses[sid] != ("CLOSED" if ext in self.closed else "ACTIVE")]
        if wrong:
            self.fail(f"list shows the wrong status for {len(wrong)} sessions (e.g. {wrong[0]})")
        log(f"  checked creates: {len(acked)} acknowledged ({len(self.closed)} then closed), all in PostgreSQL "
            f"with their id and state, listed exactly once by GET /api/v1/sessions?filter[tags]=drill-{self.tag}")

    async def check_replication(self):
        """sessions_v1 FINAL in ClickHouse equals PostgreSQL's sessions (ids, closed, tags, updated)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                pg = await self.d.psql("SELECT friendly_id, closed_at IS NOT NULL, array_to_string(tags, ','), "
                                       "external_id FROM sessions")
                ch = await self.d.clickhouse("SELECT friendly_id, closed_at IS NOT NULL, arrayStringConcat(tags, ','), "
                                             "external_id FROM sessions_v1 FINAL WHERE _is_deleted = 0 FORMAT TSV")
                pg_rows = {row[0]: ("1" if row[1] == "t" else "0", row[2], row[3]) for row in pg}
                ch_rows = {row[0]: (row[1], row[2], row[3]) for row in ch}
                error = None
            except Exception as failure:
                pg_rows, ch_rows, error = {}, {}, str(failure)
            if not error and pg_rows == ch_rows or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        if error:
            self.fail(f"replication check failed: {error}")
            return
        missing = set(pg_rows) - set(ch_rows)
        extra = set(ch_rows) - set(pg_rows)
        stale = [key for key in set(pg_rows) & set(ch_rows) if pg_rows[key] != ch_rows[key]]
        if missing or extra or stale:
            self.fail(f"ClickHouse did not converge to PostgreSQL within 30 s: {len(missing)} rows missing "
                      f"(e.g. {sorted(missing)[:2]}), {len(extra)} extra, {len(stale)} stale "
                      f"(e.g. {[(k, pg_rows[k], ch_rows[k]) for k in stale[:1]]})")
        self.counts["replicated"] = len(ch_rows)
        log(f"  checked replication: ClickHouse sessions_v1 FINAL = PostgreSQL sessions "
            f"({len(pg_rows)} rows: ids, closed, tags, externalId)")

    async def check_events(self):
        """JetStream: one event per session write; every settled waitpoint in a waitpoint event
        (several that settle together share a message)."""
        deadline = time.monotonic() + 15
        while True:
            try:
                states = await self.d.stream_states()
                sessions = await self.d.psql("SELECT count(*), count(closed_at) FROM sessions")
                settled = {row[0] for row in await self.d.psql(
                    "SELECT friendly_id FROM waitpoints WHERE status <> 'PENDING'")}
                want_sessions = int(sessions[0][0]) + int(sessions[0][1])
                session_events = states.get("SESSION_EVENTS", {}).get("messages")
                announced = await self.d.waitpoint_event_ids(states["WAITPOINT_EVENTS"])
                error = None
            except Exception as failure:
                error = str(failure)
            if not error and (session_events, announced) == (want_sessions, settled) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        if error:
            self.fail(f"event check failed: {error}")
            return
        if session_events != want_sessions:
            self.fail(f"SESSION_EVENTS holds {session_events} events; PostgreSQL has {want_sessions} session writes "
                      "(creates + closes)")
        if announced != settled:
            self.fail(f"WAITPOINT_EVENTS announces {len(announced)} waitpoints; PostgreSQL has {len(settled)} settled "
                      f"(missing e.g. {sorted(settled - announced)[:2]}, extra e.g. {sorted(announced - settled)[:2]})")
        log(f"  checked events: SESSION_EVENTS {session_events} (= creates + closes), WAITPOINT_EVENTS announce "
            f"all {len(announced)} settled waitpoints in {states['WAITPOINT_EVENTS']['messages']} messages")


async def exact_replica(deployment):
    """Every column of every session in ClickHouse (FINAL) equals PostgreSQL's, timestamps to the
    millisecond; returns (rows compared, failures)."""
    pg = await deployment.psql(
        "SELECT friendly_id, coalesce(external_id, ''), type, coalesce(task_identifier, ''), "
        "array_to_string(tags, ','), coalesce(closed_reason, ''), "
        "(extract(epoch FROM created_at) * 1000)::bigint, (extract(epoch FROM updated_at) * 1000)::bigint, "
        "coalesce(((extract(epoch FROM closed_at) * 1000)::bigint)::text, 'null'), "
        "coalesce(((extract(epoch FROM expires_at) * 1000)::bigint)::text, 'null'), "
        "'{\"data\":' || coalesce(metadata::text, 'null') || '}' FROM sessions")
    ch = await deployment.clickhouse(
        "SELECT friendly_id, external_id, type, task_identifier, arrayStringConcat(tags, ','), closed_reason, "
        "toUnixTimestamp64Milli(created_at), toUnixTimestamp64Milli(updated_at), "
        "ifNull(toString(toUnixTimestamp64Milli(closed_at)), 'null'), "
        "ifNull(toString(toUnixTimestamp64Milli(expires_at)), 'null'), metadata "
        "FROM sessions_v1 FINAL WHERE _is_deleted = 0 FORMAT TSV")
    names = ["friendly_id", "external_id", "type", "task_identifier", "tags", "closed_reason", "created_at ms",
             "updated_at ms", "closed_at ms", "expires_at ms", "metadata"]
    pg_rows = {row[0]: row for row in pg}
    ch_rows = {row[0]: row for row in ch}
    failures = []
    if set(pg_rows) != set(ch_rows):
        failures.append(f"ids differ: {len(set(pg_rows) - set(ch_rows))} only in PostgreSQL, "
                        f"{len(set(ch_rows) - set(pg_rows))} only in ClickHouse")
    differing = collections.Counter()
    example = {}
    for key in set(pg_rows) & set(ch_rows):
        for index, name in enumerate(names):
            if pg_rows[key][index] != ch_rows[key][index]:
                differing[name] += 1
                example.setdefault(name, (key, pg_rows[key][index], ch_rows[key][index]))
    for name, count in sorted(differing.items()):
        key, pg_value, ch_value = example[name]
        failures.append(f"{name} differs in {count} of {len(pg_rows)} rows (e.g. {key}: PostgreSQL {pg_value}, "
                        f"ClickHouse {ch_value})")
    return len(pg_rows), failures


# --------------------------------------------------------------------------------------------

def summarize_statuses(drill):
    parts = []
    for operation, counter in sorted(drill.statuses.items()):
        odd = {k: v for k, v in counter.items() if k not in (200, 201, 202)}
        if odd:
            parts.append(f"{operation}: " + ", ".join(f"{k}×{v}" for k, v in sorted(odd.items(), key=str)))
    return parts


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the stack folder (scripts/stack.sh start DIR)")
    parser.add_argument("--seconds", type=float, default=8.0, help="load window per drill")
    parser.add_argument("--only", help="comma-separated drill names")
    options = parser.parse_args()
    deployment = Deployment(options.dir)
    selected = [(name, fault) for name, fault in DRILLS
                if not options.only or name in options.only.split(",")]
    unknown = set(options.only.split(",")) - {name for name, _ in DRILLS} if options.only else set()
    if unknown:
        sys.exit(f"unknown drills: {', '.join(sorted(unknown))} (known: {', '.join(n for n, _ in DRILLS)})")
    log(f"faults: {len(selected)} drills, {options.seconds:.0f} s of load each: {WRITERS} writers on {CHANNELS} "
        f"channels, {READERS} SSE readers, {WAITERS} waiters, {CREATES_PER_SECOND} creates/s")
    run_tag = f"{random.randint(0, 36 ** 4):04x}"
    rows = []
    begun = time.monotonic()
    for index, (name, fault) in enumerate(selected):
        log(f"\n== drill {index + 1}/{len(selected)}: {name}")
        drill = Drill(deployment, name, fault, options.seconds, f"f{run_tag}d{index}")
        t0 = time.monotonic()
        try:
            await drill.run()
        except Exception as error:
            drill.fail(f"the drill crashed: {type(error).__name__}: {error}")
        odd = summarize_statuses(drill)
        if odd:
            log("  non-2xx answers and client errors seen under load (retried): " + "; ".join(odd))
        # A dependency down means 503 and Retry-After; any other 5xx is a bug.
        broken = [f"{operation} {status}×{count}" for operation, counter in sorted(drill.statuses.items())
                  for status, count in counter.items() if isinstance(status, int) and status >= 500 and status != 503]
        if broken:
            drill.fail("answers other than 503 for a fault: " + ", ".join(broken))
        for failure in drill.failures:
            log(f"  FAIL: {failure}")
        verdict = "FAIL" if drill.failures else "PASS"
        log(f"  => {verdict} ({time.monotonic() - t0:.1f} s)")
        rows.append((name, verdict, drill.counts, time.monotonic() - t0, len(drill.failures)))

    log("\n== final: ClickHouse is an exact replica of PostgreSQL (every column, timestamps to the ms)")
    t0 = time.monotonic()
    try:
        compared, failures = await exact_replica(deployment)
    except Exception as error:
        compared, failures = 0, [f"the check crashed: {type(error).__name__}: {error}"]
    log(f"  checked {compared} sessions: friendly_id, external_id, type, task_identifier, tags, closed_reason, "
        "created_at, updated_at, closed_at, expires_at, metadata")
    for failure in failures:
        log(f"  FAIL: {failure}")
    log(f"  => {'FAIL' if failures else 'PASS'}")
    rows.append(("exact-replica", "FAIL" if failures else "PASS", collections.Counter(), time.monotonic() - t0,
                 len(failures)))

    log("\nsummary")
    header = (f"{'drill':<20}{'result':<8}{'appends':>9}{'records':>9}{'readers':>9}{'waiters':>9}{'creates':>9}"
              f"{'failures':>10}{'time':>8}")
    log(header)
    log("-" * len(header))
    totals = collections.Counter()
    drills = 0
    for name, verdict, counts, seconds, failures in rows:
        if name == "exact-replica":
            log(f"{name:<20}{verdict:<8}{'':>45}{failures:>10}{seconds:>7.1f}s")
            continue
        drills += 1
        totals.update(counts)
        log(f"{name:<20}{verdict:<8}{counts['appends acked']:>9}{counts['records']:>9}"
            f"{str(counts['readers ok']) + '/' + str(READERS):>9}{str(counts['waiters ok']) + '/' + str(WAITERS):>9}"
            f"{counts['creates acked']:>9}{failures:>10}{seconds:>7.1f}s")
    log("-" * len(header))
    passed = sum(1 for row in rows if row[1] == "PASS")
    log(f"{'total':<20}{f'{passed}/{len(rows)}':<8}{totals['appends acked']:>9}{totals['records']:>9}"
        f"{str(totals['readers ok']) + '/' + str(READERS * drills):>9}"
        f"{str(totals['waiters ok']) + '/' + str(WAITERS * drills):>9}"
        f"{totals['creates acked']:>9}{sum(r[4] for r in rows):>10}{time.monotonic() - begun:>7.1f}s")
    log("\n(appends: acknowledged appends; records: stored records read back; readers, waiters: passed of "
        "started; creates: acknowledged creates; failures: failed checks)")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
