"""A bounded load client for `hsm-csr serve`, through the official SDK.

usage: load.py ENDPOINT COUNT CONCURRENCY DEADLINE_S   (AK id/secret in LOAD_AK_ID / LOAD_AK_SECRET)
Sends COUNT CreateCdnCertificateSigningRequest calls over CONCURRENCY threads to a
loopback ENDPOINT, stops at COUNT or DEADLINE_S, whichever comes first, and prints
one JSON line: count, ok, errors, seconds, throughput (req/s), p50_ms, p99_ms.
"""
import concurrent.futures
import json
import os
import sys
import time

from alibabacloud_cdn20180510.client import Client
from alibabacloud_cdn20180510 import models
from alibabacloud_tea_openapi import models as om

endpoint, count, concurrency, deadline_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
host = endpoint.rsplit(":", 1)[0]
assert host in ("127.0.0.1", "localhost", "[::1]"), "load goes to loopback only"
config = om.Config(access_key_id=os.environ["LOAD_AK_ID"], access_key_secret=os.environ["LOAD_AK_SECRET"],
                   endpoint=endpoint, protocol="http", read_timeout=120000)
stop_at = time.monotonic() + deadline_s


def one(i):
    if time.monotonic() > stop_at:
        return None
    started = time.monotonic()
    try:
        Client(config).create_cdn_certificate_signing_request(
            models.CreateCdnCertificateSigningRequestRequest(common_name=f"load{i}.example.com"))
        return ("ok", time.monotonic() - started)
    except Exception as e:
        return (getattr(e, "code", repr(e)), time.monotonic() - started)


t0 = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
    results = [r for r in pool.map(one, range(count)) if r is not None]
elapsed = time.monotonic() - t0
latencies = sorted(d for code, d in results if code == "ok")
ok = len(latencies)


def pct(p):
    return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1) if latencies else None


print(json.dumps({"count": len(results), "ok": ok, "errors": len(results) - ok, "seconds": round(elapsed, 2),
                  "throughput": round(ok / elapsed, 2) if elapsed else 0, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}))
