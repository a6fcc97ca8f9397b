"""Helpers shared by the benchmarks: percentiles, the control plane's create, raw JetStream delivery."""
import json
import subprocess
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


def jetstream_delivery(bench, nats, seconds):
    """Raw JetStream: sessions-bench publishes at 500/s while an ordered consumer reads."""
    out = subprocess.run([bench, "--mode", "delivery", "--nats", nats, "--rate", "500", "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
