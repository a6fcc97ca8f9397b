"""Helpers shared by the benchmarks: percentiles, the control plane's create, and a minimal
asyncio HTTP/1.1 client (keep-alive requests and streamed responses) that holds thousands of
connections in one process."""
import asyncio
import json
import urllib.parse
import urllib.request


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


def create_session(control_plane, key, external_id):
    request = urllib.request.Request(
        control_plane + "/api/v1/sessions", method="POST",
        data=json.dumps({"type": "bench", "externalId": external_id}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)["id"]


async def open_connection(base):
    parts = urllib.parse.urlsplit(base)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def read_head(reader):
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def request(reader, writer, host, method, path, key, body=b"", content_type="text/plain"):
    """One request on a keep-alive connection; returns (status, body)."""
    writer.write((f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                  f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    await writer.drain()
    status, headers = await read_head(reader)
    return status, await reader.readexactly(int(headers.get("content-length", "0")))


async def post(reader, writer, host, path, key, body):
    """Appends: fails on anything but 200."""
    status, payload = await request(reader, writer, host, "POST", path, key, body)
    if status != 200:
        raise RuntimeError(f"append answered {status}: {payload[:200]}")
