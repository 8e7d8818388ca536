#!/usr/bin/env python3
"""Start time from a deep env next to start time from debian.

Builds a chain of N forks of debian (each writes 1 KiB to /code/data.bin and
snapshots), then times cold creates from the deepest env and from debian,
interleaved in two rounds, and deletes the chain. Against a running server:

    scripts/deep-chain-start.py http://127.0.0.1:7070 "$(cat /var/lib/sprout/admin.key)" [N]
"""
import sys, threading, time

import requests

base, key = sys.argv[1].rstrip("/"), sys.argv[2]
depth = int(sys.argv[3]) if len(sys.argv) > 3 else 200
H = {"X-API-Key": key}


def create(env):
    r = requests.post(base + "/v1/sandboxes", headers=H, json={"env": env, "fromPool": False})
    r.raise_for_status()
    return r.json()["id"]


def kill(sid):
    threading.Thread(target=lambda: requests.delete(f"{base}/v1/sandboxes/{sid}", headers=H)).start()


env, sid = "debian", create("debian")
first = None
for _ in range(depth):
    requests.post(f"{base}/v1/sandboxes/{sid}/exec", headers=H,
                  json={"shell": "head -c 1024 /dev/urandom > /code/data.bin"}).raise_for_status()
    env = requests.post(f"{base}/v1/sandboxes/{sid}/snapshot", headers=H, json={"name": "deep-chain"}).json()["id"]
    first = first or env
    kill(sid)
    sid = create(env)
kill(sid)
time.sleep(5)


def measure(e, n=15):
    times = []
    for _ in range(n):
        t = time.time()
        s = create(e)
        times.append((time.time() - t) * 1000)
        kill(s)
        time.sleep(0.3)
    times.sort()
    return times[n // 2], times[int(n * 0.95) - 1]


for label, e in [("debian", "debian"), (f"{depth}-deep", env)] * 2:
    p50, p95 = measure(e)
    print(f"{label:10s} p50={p50:.0f} ms p95={p95:.0f} ms")
time.sleep(5)
requests.delete(f"{base}/v1/envs/{first}?force=true", headers=H)
