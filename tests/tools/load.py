"""A bounded load client for `hsm-csr serve`, through the official SDK, for
loopback endpoints only. Every mode stops by itself.

usage: load.py ENDPOINT closed COUNT CONCURRENCY DEADLINE_S   COUNT calls over CONCURRENCY threads
       load.py ENDPOINT rate RPS SECONDS                      open loop: RPS calls per second for SECONDS
       load.py ENDPOINT burst COUNT                           COUNT calls released at once
(access key in LOAD_AK_ID / LOAD_AK_SECRET)
Prints one JSON line: count, ok, throttled, errors (other codes), seconds,
throughput (ok per second), p50_ms, p99_ms (of successful calls), codes.
"""
import collections
import concurrent.futures
import json
import os
import sys
import threading
import time

from alibabacloud_cdn20180510.client import Client
from alibabacloud_cdn20180510 import models
from alibabacloud_tea_openapi import models as om

endpoint, mode = sys.argv[1], sys.argv[2]
assert endpoint.rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]"), "load goes to loopback only"
config = om.Config(access_key_id=os.environ["LOAD_AK_ID"], access_key_secret=os.environ["LOAD_AK_SECRET"],
                   endpoint=endpoint, protocol="http", read_timeout=120000)
local = threading.local()


def one(i):
    client = getattr(local, "client", None) or Client(config)
    local.client = client
    started = time.monotonic()
    try:
        client.create_cdn_certificate_signing_request(
            models.CreateCdnCertificateSigningRequestRequest(common_name=f"load{i}.example.com"))
        return "ok", time.monotonic() - started
    except Exception as e:
        return getattr(e, "code", repr(e)), time.monotonic() - started


t0 = time.monotonic()
if mode == "closed":
    count, concurrency, deadline = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    stop_at = t0 + deadline
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = [r for r in pool.map(lambda i: one(i) if time.monotonic() < stop_at else None, range(count)) if r]
elif mode == "rate":
    rps, seconds = float(sys.argv[3]), float(sys.argv[4])
    futures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(int(rps * seconds)):
            time.sleep(max(0.0, t0 + i / rps - time.monotonic()))
            futures.append(pool.submit(one, i))
        results = [f.result() for f in futures]
elif mode == "burst":
    count = int(sys.argv[3])
    barrier = threading.Barrier(count)

    def released(i):
        local.client = Client(config)
        barrier.wait()
        return one(i)

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(released, range(count)))
else:
    sys.exit(f"unknown mode {mode}")
elapsed = time.monotonic() - t0
latencies = sorted(d for code, d in results if code == "ok")
codes = collections.Counter(code for code, _ in results)


def pct(p):
    return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1) if latencies else None


print(json.dumps({"count": len(results), "ok": codes["ok"], "throttled": codes["Throttling.User"],
                  "errors": len(results) - codes["ok"] - codes["Throttling.User"], "seconds": round(elapsed, 2),
                  "throughput": round(codes["ok"] / elapsed, 2) if elapsed else 0, "p50_ms": pct(0.5),
                  "p99_ms": pct(0.99), "codes": dict(codes)}))
