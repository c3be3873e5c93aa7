#!/usr/bin/env bash
# usage: scripts/bench.sh            (BENCH_RUNS=N to change the run count; default 40)
#
# RSA-2048 CSRs on one private SoftHSM2 token, measured in one run:
#  (a) `hsm-csr create`, whole process;
#  (b) the peer pipeline on the same token, whole processes:
#      `pkcs11-tool --keypairgen --key-type rsa:2048` then
#      `openssl req -new -engine pkcs11 -keyform engine -key pkcs11:...`;
#  (c) hsm-csr's own phases, from `--timings`, and two fixed costs that are
#      not hsm-csr's: a process that does nothing (`--version`), and one that
#      only loads, initialises and finalises the module (unknown token);
#  (d) the peer's fixed cost around its keygen: `pkcs11-tool --login
#      --list-objects` (load, login, exit) plus the `openssl req` step, to
#      compare what each side adds to C_GenerateKeyPair.
# (a) and (b) alternate run by run so that machine noise hits both alike;
# each run's key pair is deleted (untimed) so the token stays the same size.
# Prints medians and 10th/90th percentiles, and the ratios between them.
# Then `hsm-csr batch` over BENCH_BATCH lines (default 40) with 1 and with 2
# sessions: CSRs per second and the ratio.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"
runs=${BENCH_RUNS:-40}
batch_lines=${BENCH_BATCH:-40}

need_packages softhsm2 opensc openssl libengine-pkcs11-openssl
cargo build --release --quiet --locked
bin=$REPO_ROOT/target/release/hsm-csr

work=$(mktemp -d /tmp/hsm-csr-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
TOKEN_PIN=1234 bash scripts/make-softhsm-token.sh "$work/store" bench
export SOFTHSM2_CONF=$work/store/softhsm2.conf HSM_CSR_PIN=1234
engine=$(find /usr/lib -path '*engines-3/pkcs11.so' | head -n1)
[ -n "$engine" ] || die "libengine-pkcs11-openssl's pkcs11.so not found"
cat > "$work/openssl.cnf" <<EOC
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $engine
MODULE_PATH = $SOFTHSM_MODULE
init = 0
[req]
distinguished_name = dn
string_mask = default
[dn]
EOC

p11() { pkcs11-tool --module "$SOFTHSM_MODULE" --token-label bench --login --pin 1234 "$@"; }
delete_pair() {  # id in hex; a failed delete only makes the token grow
  p11 --delete-object --type privkey --id "$1" >/dev/null 2>&1 || true
  p11 --delete-object --type pubkey --id "$1" >/dev/null 2>&1 || true
}
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", (b - a) * 1000 }'; }

run_ours() {
  local t0=$EPOCHREALTIME
  "$bin" create --module "$SOFTHSM_MODULE" --token bench --common-name bench.example.com \
    --timings >"$work/out.json" 2>"$work/timings" || { cat "$work/timings" >&2; die "hsm-csr create failed"; }
  local wall; wall=$(ms_since "$t0")
  local phases; phases=$(grep '^timings:' "$work/timings" | sed 's/^timings: //')
  echo "ours wall_ms=$wall $phases" >>"$work/samples"
  local id; id=$(sed -n 's/.*;id=\([^;]*\);.*/\1/p' "$work/out.json" | tr -d '%')
  delete_pair "$id"
}
run_peer() {
  local id=$1 t0 t1
  t0=$EPOCHREALTIME
  p11 --keypairgen --key-type rsa:2048 --id "$id" --label peer >/dev/null 2>&1
  t1=$EPOCHREALTIME
  OPENSSL_CONF=$work/openssl.cnf openssl req -new -engine pkcs11 -keyform engine \
    -key "pkcs11:token=bench;id=%${id:0:2}%${id:2:2};type=private;pin-value=1234" \
    -subj "/C=CN/ST=Zhejiang/L=Hangzhou/O=Alibaba Inc/OU=Aliyun CDN/CN=bench.example.com" \
    -addext "subjectAltName=DNS:bench.example.com" -out "$work/peer.pem" >/dev/null 2>&1
  echo "peer wall_ms=$(ms_since "$t0") keygen_proc_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) * 1000 }') req_proc_ms=$(ms_since "$t1")" >>"$work/samples"
  openssl req -in "$work/peer.pem" -verify -noout >/dev/null 2>&1 || die "peer pipeline made a bad CSR"
  delete_pair "$id"
}

run_fixed() {
  local t0=$EPOCHREALTIME
  "$bin" --version >/dev/null
  echo "floor wall_ms=$(ms_since "$t0")" >>"$work/samples"
  t0=$EPOCHREALTIME
  "$bin" create --module "$SOFTHSM_MODULE" --token no-such-token --common-name x.example \
    --format pem >/dev/null 2>&1 || true
  echo "load wall_ms=$(ms_since "$t0")" >>"$work/samples"
}
run_peer_fixed() {
  local t0=$EPOCHREALTIME
  p11 --list-objects --type privkey >/dev/null 2>&1
  echo "peerfixed wall_ms=$(ms_since "$t0")" >>"$work/samples"
}

say "benchmarking: $runs runs of each, interleaved"
: >"$work/samples"
for i in $(seq "$runs"); do
  if (( i % 2 )); then run_ours; run_peer 0b0b; else run_peer 0b0b; run_ours; fi
  run_peer_fixed
  run_fixed
done

for i in $(seq "$batch_lines"); do printf '{"CommonName":"batch%s.example.com"}\n' "$i"; done >"$work/batch.jsonl"
for workers in 1 2; do
  t0=$EPOCHREALTIME
  "$bin" batch --module "$SOFTHSM_MODULE" --token bench --input "$work/batch.jsonl" \
    --output "$work/batch.out" --workers "$workers" 2>/dev/null
  echo "batch$workers wall_ms=$(ms_since "$t0") lines=$batch_lines" >>"$work/samples"
done

python3 - "$work/samples" "$runs" <<'EOP'
import re, statistics, sys
rows = [dict(re.findall(r"(\w+)=([\d.]+)", l)) | {"who": l.split()[0]} for l in open(sys.argv[1])]
def col(who, key): return sorted(float(r[key]) for r in rows if r["who"] == who)
def q(xs, p):  # nearest-rank percentile
    return xs[min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))]
def line(name, xs): print(f"  {name:<44} {statistics.median(xs):8.1f} {q(xs, .1):8.1f} {q(xs, .9):8.1f}")
ours = [r for r in rows if r["who"] == "ours"]
beyond = sorted(float(r["wall_ms"]) - float(r["keygen_ms"]) for r in ours)
print(f"RSA-2048 CSR on SoftHSM2, {sys.argv[2]} runs each, interleaved (ms)")
print(f"  {'':<44} {'median':>8} {'p10':>8} {'p90':>8}")
line("(a) hsm-csr create, whole process", col("ours", "wall_ms"))
line("(b) pkcs11-tool keygen + openssl req", col("peer", "wall_ms"))
line("      pkcs11-tool --keypairgen", col("peer", "keygen_proc_ms"))
line("      openssl req -engine pkcs11", col("peer", "req_proc_ms"))
print("  (c) hsm-csr phases (--timings)")
for k in ["init", "login", "keygen", "sign", "encode"]:
    line(f"      {k}", col("ours", f"{k}_ms"))
line("      beyond C_GenerateKeyPair (a - keygen)", beyond)
line("      of which: empty process (--version)", col("floor", "wall_ms"))
line("      of which: process + module load/init/exit", col("load", "wall_ms"))
print("  (d) peer's cost around its keygen")
line("      pkcs11-tool load + login + exit", col("peerfixed", "wall_ms"))
a, b = statistics.median(col("ours", "wall_ms")), statistics.median(col("peer", "wall_ms"))
ours_extra = statistics.median(beyond)
peer_extra = statistics.median(col("peerfixed", "wall_ms")) + statistics.median(col("peer", "req_proc_ms"))
print(f"ratio (a)/(b) of medians: {a / b:.2f}")
print(f"hsm-csr time beyond C_GenerateKeyPair, median: {ours_extra:.1f} ms")
print(f"peer time beyond C_GenerateKeyPair, median (d): {peer_extra:.1f} ms")
print(f"ratio of time beyond keygen, hsm-csr/peer: {ours_extra / peer_extra:.2f}")
b1, b2 = (next(r for r in rows if r["who"] == f"batch{w}") for w in (1, 2))
rate = lambda r: float(r["lines"]) / float(r["wall_ms"]) * 1000
print(f"batch of {int(float(b1['lines']))} RSA-2048 CSRs: {rate(b1):.2f} CSR/s with 1 session, "
      f"{rate(b2):.2f} CSR/s with 2 sessions (ratio {rate(b2) / rate(b1):.2f})")
EOP
