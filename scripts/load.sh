#!/usr/bin/env bash
# usage: scripts/load.sh        (LOAD_REQUESTS=N per run, default 60; LOAD_DEADLINE=S per run, default 120)
#
# Bounded load on loopback only: `hsm-csr serve` (release) on a private
# SoftHSM2 token, called through the official SDK by tests/tools/load.py,
# RSA-2048 keys made on demand, with 1 worker and then with 2 workers
# (one logged-in session each). Prints throughput, p50/p99 latency and
# errors for each, and the throughput ratio; then the same requests served
# from a key pool filled beforehand ([pool] size = LOAD_REQUESTS), all
# measured in one run.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"
requests=${LOAD_REQUESTS:-60}
deadline=${LOAD_DEADLINE:-120}

need_packages softhsm2 curl
[ -x .venv-test/bin/python ] && .venv-test/bin/python -c 'import alibabacloud_cdn20180510' 2>/dev/null ||
  die "run scripts/test.sh once first: it makes .venv-test with the SDKs"
cargo build --release --quiet --locked

work=$(mktemp -d /tmp/hsm-csr-load.XXXXXX)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export LOAD_AK_ID=LoadKey LOAD_AK_SECRET=load-secret

run() {  # run WORKERS [POOL] -> JSON line
  local workers=$1 pool=${2:-0} port
  rm -rf "$work/store"
  TOKEN_PIN=1234 bash scripts/make-softhsm-token.sh "$work/store" load >/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$work/serve.toml" <<EOC
[token]
module = "$SOFTHSM_MODULE"
label = "load"
pin_file = "$work/store/user-pin"
[service]
listen = "127.0.0.1:$port"
workers = $workers
rate_limit = 100000
[pool]
size = $pool
[[service.access_keys]]
id = "LoadKey"
secret_env = "LOAD_AK_SECRET"
actions = ["*"]
EOC
  SOFTHSM2_CONF=$work/store/softhsm2.conf HSM_CSR_LOG=warn target/release/hsm-csr serve --config "$work/serve.toml" &
  server=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  if [ "$pool" -gt 0 ]; then   # let the refiller fill the pool first, within the deadline
    for _ in $(seq $((deadline * 10))); do
      depth=$(curl -fs "http://127.0.0.1:$port/metrics" | sed -n 's/^hsm_csr_pool_depth //p')
      [ "${depth:-0}" -ge "$pool" ] && break; sleep 0.1
    done
  fi
  .venv-test/bin/python tests/tools/load.py "127.0.0.1:$port" "$requests" 8 "$deadline"
  kill "$server"; wait "$server" 2>/dev/null || true; server=
}

say "on-demand RSA-2048, $requests requests, 8 concurrent clients, 1 worker"
one=$(run 1)
say "on-demand RSA-2048, $requests requests, 8 concurrent clients, 2 workers"
two=$(run 2)
say "the same requests from a key pool of $requests filled beforehand, 2 workers"
pooled=$(run 2 "$requests")
python3 - "$one" "$two" "$pooled" <<'EOP'
import json, sys
one, two, pooled = (json.loads(a) for a in sys.argv[1:4])
print(f"{'':<28} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'ok':>5} {'errors':>6}")
for name, r in (("on-demand, 1 worker", one), ("on-demand, 2 workers", two), ("key pool, 2 workers", pooled)):
    print(f"{name:<28} {r['throughput']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['ok']:>5} {r['errors']:>6}")
ratio = two["throughput"] / one["throughput"] if one["throughput"] else 0
print(f"throughput ratio, 2 workers / 1 worker: {ratio:.2f}")
print(f"p50 latency, key pool / on-demand (2 workers): {pooled['p50_ms'] / two['p50_ms']:.3f}")
EOP
