#!/usr/bin/env bash
# usage: scripts/cluster.sh        (full run; CLUSTER_SHORT=1 for the short counts scripts/test.sh uses)
#
# The reference deployment of docs/deployment.md, on loopback only, started
# and stopped by this script: redis-server, three `hsm-csr serve` replicas
# behind haproxy, one shared SoftHSM2 token behind `p11-kit server` (the
# stand-in for a network HSM) and a second token. It runs each scenario of
# the scale-out issue and prints its figure; a scenario that misses its
# bound makes the script exit non-zero after the summary. Every run has a
# fixed count or duration and stops by itself.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

short=${CLUSTER_SHORT:-}
limit=${CLUSTER_RATE_LIMIT:-$([ -n "$short" ] && echo 40 || echo 100)}   # calls/s per access key
burst=$((6 * limit))                                                      # sent within one second
pooled=${CLUSTER_POOLED:-$([ -n "$short" ] && echo 60 || echo 300)}       # pooled calls over 3 replicas
pool=${CLUSTER_POOL:-$([ -n "$short" ] && echo 40 || echo 150)}           # ready keys per replica
rate=${CLUSTER_RATE:-20}                                                  # calls/s in the fault runs
fault_s=${CLUSTER_FAULT_SECONDS:-$([ -n "$short" ] && echo 8 || echo 15)}
latency_n=${CLUSTER_LATENCY_CALLS:-$([ -n "$short" ] && echo 40 || echo 200)}

need_packages softhsm2 opensc p11-kit p11-kit-modules redis-server redis-tools haproxy curl python3
cargo build --release --locked --bin hsm-csr --example load

P11KIT_CLIENT=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so
work=$(mktemp -d /tmp/hsm-csr-cluster.XXXXXX)
declare -A pids=()        # name -> pid of everything this script started
failures=()
cleanup() {
  local name
  for name in "${!pids[@]}"; do stop_proc "$name"; done
  rm -rf "$work"
}
trap cleanup EXIT
export LOAD_AK_ID=ClusterKey LOAD_AK_SECRET=cluster-secret HSM_CSR_LOG=${HSM_CSR_LOG:-warn}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
stop_proc() {  # stop_proc NAME [SIGNAL]
  local pid=${pids[$1]:-}
  [ -n "$pid" ] || return 0
  pkill -"${2:-TERM}" -P "$pid" 2>/dev/null || true
  kill -"${2:-TERM}" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "pids[$1]"
}
fail() { failures+=("$*"); printf '    FAILED: %s\n' "$*"; }
wait_http() {  # wait_http URL: up to 20 s for a 200
  for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  return 1
}

# --- tokens: A is shared by every replica through p11-kit server; B is the second token.
token() {  # token NAME: a SoftHSM2 store behind its own p11-kit server
  local name=$1
  [ -d "$work/$name" ] || TOKEN_PIN=1234 bash scripts/make-softhsm-token.sh "$work/$name" "cluster-$name" >/dev/null
  rm -f "$work/$name.sock"
  SOFTHSM2_CONF=$work/$name/softhsm2.conf p11-kit server --foreground --provider "$SOFTHSM_MODULE" \
    -n "$work/$name.sock" "pkcs11:token=cluster-$name" >/dev/null 2>&1 &
  pids[p11kit-$name]=$!
  for _ in $(seq 100); do [ -S "$work/$name.sock" ] && return 0; sleep 0.05; done
  die "p11-kit server for token $name did not start"
}
fresh_token_a() {  # stops the replicas and gives token A an empty store (and Redis no claims): latency and throughput runs start alike
  local i
  for i in 1 2 3; do stop_proc "replica$i"; done
  stop_proc p11kit-A; rm -rf "$work/A"; token A
  redis-cli -p "$redis_port" flushall >/dev/null
}
keys_on() {  # keys_on NAME LABEL-SUBSTRING: private keys on token NAME whose label contains it (read with pkcs11-tool)
  SOFTHSM2_CONF=$work/$1/softhsm2.conf pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "cluster-$1" \
    --login --pin 1234 --list-objects --type privkey 2>/dev/null | grep -c "label:.*$2" || true
}
token_a_keys() {  # token_a_keys: "ALL UNASSIGNED UNDELIVERED", token A's private keys classified from one listing
  # One listing, so that no key is counted in one class and missed in the
  # other (three listings in a row raced the refillers). Unassigned: the
  # pool's label and a pool CKA_ID ("hsm-pool" and 16 bytes); undelivered:
  # the undelivered label or a mark as CKA_ID ("hsm", 29 bytes).
  { SOFTHSM2_CONF=$work/A/softhsm2.conf pkcs11-tool --module "$SOFTHSM_MODULE" --token-label cluster-A \
      --login --pin 1234 --list-objects --type privkey 2>/dev/null || true; } | awk '
    function flush() {
      if (!seen) return
      all++
      if (label ~ /pool:unassigned$/ && id ~ /^68736d2d706f6f6c/ && length(id) == 48) unassigned++
      else if (label ~ /undelivered/ || (id ~ /^68736d/ && length(id) == 64)) undelivered++
      seen = 0
    }
    /^Private Key Object/ { flush(); seen = 1; label = ""; id = ""; next }
    /^[[:space:]]+label:/ { sub(/^[[:space:]]+label:[[:space:]]*/, ""); label = $0; next }
    /^[[:space:]]+ID:/ { id = $2; next }
    END { flush(); print all + 0, unassigned + 0, undelivered + 0 }'
}

# --- redis
redis_port=$(free_port)
redis_start() {
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$work" --save '' \
    --appendonly yes --appendfsync always --daemonize no >"$work/redis.log" 2>&1 &
  pids[redis]=$!
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && return 0; sleep 0.05; done
  die "redis-server did not start (see $work/redis.log)"
}

# --- replicas
replica_port=()
replica() {  # replica I [REDIS=yes|no] [POOL] [TOKENS=A|AB] [KEY=ec-p256|rsa]: (re)starts replica I
  local i=$1 use_redis=${2:-yes} pool_size=${3:-$pool} tokens=${4:-A} key=${5:-ec-p256}
  [ -n "${replica_port[$i]:-}" ] || replica_port[$i]=$(free_port)
  local conf=$work/replica$i.toml
  {
    if [ "$tokens" = AB ]; then
      multi_token_tables
    else
      printf '[token]\nmodule = "%s"\nlabel = "cluster-A"\npin_file = "%s/A/user-pin"\n' "$P11KIT_CLIENT" "$work"
    fi
    printf '[key]\ntype = "%s"\n[pool]\nsize = %s\n' "$key" "$pool_size"
    printf '[service]\nlisten = "127.0.0.1:%s"\nrate_limit = %s\nworkers = 2\n' "${replica_port[$i]}" "$limit"
    [ "$use_redis" = yes ] && printf 'redis_url = "redis://127.0.0.1:%s/0"\n' "$redis_port"
    printf '[[service.access_keys]]\nid = "ClusterKey"\nsecret_env = "LOAD_AK_SECRET"\nactions = ["*"]\n'
  } >"$conf"
  P11_KIT_SERVER_ADDRESS=unix:path=$work/A.sock SOFTHSM2_CONF=$work/B/softhsm2.conf \
    target/release/hsm-csr serve --config "$conf" \
    2>>"$work/replica$i.log" &
  pids[replica$i]=$!
  wait_http "http://127.0.0.1:${replica_port[$i]}/healthz" ||
    { tail -n 20 "$work/replica$i.log" >&2; die "replica $i did not come up"; }
}
multi_token_tables() {  # the config tables naming tokens A and B (see docs/deployment.md)
  printf '[[tokens]]\nmodule = "%s"\nlabel = "cluster-A"\npin_file = "%s/A/user-pin"\n' "$P11KIT_CLIENT" "$work"
  printf '[[tokens]]\nmodule = "%s"\nlabel = "cluster-B"\npin_file = "%s/B/user-pin"\n' "$SOFTHSM_MODULE" "$work"
}
pool_depth() { curl -fs "http://127.0.0.1:${replica_port[$1]}/metrics" | awk '/^hsm_csr_pool_depth[ {]/ { s += $NF } END { print s + 0 }'; }
fill_pools() {  # fill_pools I...: waits (bounded) until each replica's pool is full
  local i
  for i in "$@"; do
    for _ in $(seq 1200); do [ "$(pool_depth "$i")" -ge "$pool" ] && break; sleep 0.1; done
  done
}
addrs() { local i out=; for i in "$@"; do out+=${out:+,}127.0.0.1:${replica_port[$i]}; done; echo "$out"; }
load() { target/release/examples/load "$@"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
cut_off() {  # cut_off RESULT: calls that were sent and got no answer (not refused at connect, not answered with a code)
  python3 -c 'import json,sys; c = json.loads(sys.argv[1])["codes"]; print(sum(n for k, n in c.items() if k.startswith(("io:", "http:5")) and k != "io:ConnectionRefused"))' "$1"
}

# --- haproxy
haproxy_port=$(free_port)
haproxy_start() {
  cat >"$work/haproxy.cfg" <<EOC
global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  retries 2
  option redispatch
frontend hsm_csr
  bind 127.0.0.1:$haproxy_port
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /healthz
  default-server inter 250ms fall 1 rise 2
  server r1 127.0.0.1:${replica_port[1]} check
  server r2 127.0.0.1:${replica_port[2]} check
  server r3 127.0.0.1:${replica_port[3]} check
EOC
  haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
  pids[haproxy]=$!
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$haproxy_port/healthz" && return 0; sleep 0.1; done
  die "haproxy did not come up (see $work/haproxy.log)"
}

say "starting redis-server, token A behind p11-kit server, 3 replicas (pool $pool each) and haproxy"
redis_start
token A
for i in 1 2 3; do replica "$i"; done
fill_pools 1 2 3
haproxy_start
delivered=$work/delivered.tsv   # every successful call on token A: replica, query, PubMd5
: >"$delivered"

say "1. one access key, limit $limit/s: $burst calls within one second, spread over the 3 replicas"
r1=$(LOAD_RECORD=$work/rate.tsv load "$(addrs 1 2 3)" burst "$burst" 800)
cat "$work/rate.tsv" >>"$delivered"
ok1=$(field "$r1" ok) thr1=$(field "$r1" throttled) err1=$(field "$r1" errors)
printf '    accepted %s of %s (limit %s), throttled %s, other errors %s\n' "$ok1" "$burst" "$limit" "$thr1" "$err1"
[ "$ok1" -le $((limit + (limit + 99) / 100)) ] || fail "rate limit: $ok1 accepted > $limit"
[ "$err1" -eq 0 ] || fail "rate limit: other errors $(field "$r1" codes)"

say "2. every successful call's nonce replayed to a different replica"
r2=$(load "$(addrs 1 2 3)" replay "$work/rate.tsv")
printf '    replayed %s, accepted %s, codes %s\n' "$(field "$r2" count)" "$(field "$r2" ok)" "$(field "$r2" codes)"
[ "$(field "$r2" ok)" -eq 0 ] || fail "replay: $(field "$r2" ok) replays accepted"

say "3. one token's pool shared by 3 replicas: $pooled pooled calls"
sleep 1.1   # a fresh rate-limit window
fill_pools 1 2 3
per_s=$((limit / 2)); secs=$(awk -v n="$pooled" -v r="$per_s" 'BEGIN { printf "%.3f", n / r }')
r3=$(LOAD_RECORD=$work/pooled.tsv load "$(addrs 1 2 3)" rate "$per_s" "$secs")
cat "$work/pooled.tsv" >>"$delivered"
distinct=$(cut -f3 "$work/pooled.tsv" | sort -u | wc -l)
printf '    %s calls, %s ok, %s distinct PubMd5, p50 %s ms\n' "$(field "$r3" count)" "$(field "$r3" ok)" "$distinct" "$(field "$r3" p50_ms)"
[ "$distinct" -eq "$(field "$r3" ok)" ] || fail "pool: $distinct distinct PubMd5 for $(field "$r3" ok) calls"
[ "$(field "$r3" errors)" -eq 0 ] || fail "pool: errors $(field "$r3" codes)"

check_token_a() {  # check_token_a WHEN [UNANSWERED]: token A holds the delivered keys plus unassigned pool keys, no undelivered one
  # A call whose answer was handed to its connection when a replica died is
  # delivered as far as any server can tell, though the client never read
  # it: at most UNANSWERED such keys (calls that got no answer) are allowed;
  # a key still marked undelivered never is.
  # Counted once the token is still: a refiller makes a key (under the
  # undelivered label and a mark) only while its pool is below its size,
  # and no call runs here, so with every pool full nothing changes keys.
  local all unassigned undelivered delivered_n other allowed=${2:-0} i
  fill_pools 1 2 3
  for i in 1 2 3; do
    [ "$(pool_depth "$i")" -ge "$pool" ] || fail "token A $1: replica $i's pool not full after 120 s (the count below may be off)"
  done
  read -r all unassigned undelivered <<<"$(token_a_keys)"
  delivered_n=$(cut -f3 "$delivered" | sort -u | wc -l)
  other=$((all - delivered_n - unassigned))
  printf '    token A %s: %s key pairs = %s delivered + %s unassigned + %s answered but unread (at most %s calls went unanswered); %s marked undelivered\n' \
    "$1" "$all" "$delivered_n" "$unassigned" "$other" "$allowed" "$undelivered"
  [ "$undelivered" -eq 0 ] && [ "$other" -ge 0 ] && [ "$other" -le "$allowed" ] ||
    fail "token A $1: $other key pairs neither delivered nor unassigned (at most $allowed allowed), $undelivered marked undelivered"
}
check_token_a "after the pooled calls"

say "4. replica 2 killed with SIGKILL under $rate calls/s through haproxy, restarted 3 s later"
LOAD_RECORD=$work/kill.tsv load "127.0.0.1:$haproxy_port" rate "$rate" "$fault_s" >"$work/r4.json" &
loader=$!
sleep 2; stop_proc replica2 KILL; sleep 3; replica 2
wait "$loader"; r4=$(cat "$work/r4.json")
cat "$work/kill.tsv" >>"$delivered"
printf '    %s calls: %s ok, codes %s\n' "$(field "$r4" count)" "$(field "$r4" ok)" "$(field "$r4" codes)"
# At most the calls on replica 2's two workers, plus those haproxy sent it before its check saw it gone.
[ "$(field "$r4" errors)" -le 4 ] || fail "replica kill: $(field "$r4" errors) failed calls"
sleep 2; check_token_a "after the replica's restart" "$(cut_off "$r4")"

say "   the whole service killed with SIGKILL during on-demand RSA keygen (pool off), then restarted"
for i in 1 2 3; do stop_proc "replica$i"; replica "$i" yes 0 A rsa; done
LOAD_RECORD=$work/killall.tsv load "$(addrs 1 2 3)" closed 60 6 30 >"$work/r4b.json" &
loader=$!
sleep 1.5
inflight=$(for i in 1 2 3; do curl -fs "http://127.0.0.1:${replica_port[$i]}/metrics" || true; done |
  awk '/^hsm_csr_sessions_in_use[ {]/ { s += $NF } END { print s + 0 }')
for i in 1 2 3; do stop_proc "replica$i" KILL; done
wait "$loader" || true
cat "$work/killall.tsv" >>"$delivered"
printf '    %s CSRs delivered before the kill, about %s keygens in flight\n' "$(wc -l <"$work/killall.tsv")" "$inflight"
for i in 1 2 3; do replica "$i"; done
r4b=$(cat "$work/r4b.json")
sleep 2; check_token_a "after the whole service's restart" "$(cut_off "$r4b")"

say "5. Redis stopped for 5 s under $rate calls/s"
fill_pools 1 2 3
: >"$work/timeline.tsv"
LOAD_TIMELINE=$work/timeline.tsv LOAD_RECORD=$work/outage.tsv \
  load "$(addrs 1 2 3)" rate "$rate" $((fault_s + 5)) >"$work/r5.json" &
loader=$!
sleep 2; stop_proc redis KILL; down_ms=$(date +%s%3N)
# replays of earlier calls while Redis is down: none may be accepted
during=$(load "$(addrs 1 2 3)" replay "$work/rate.tsv")
sleep 5; redis_start; up_ms=$(date +%s%3N)
wait "$loader"; r5=$(cat "$work/r5.json")
cat "$work/outage.tsv" >>"$delivered"
after=$(load "$(addrs 1 2 3)" replay "$work/rate.tsv")
printf '    %s calls: %s ok, codes %s\n' "$(field "$r5" count)" "$(field "$r5" ok)" "$(field "$r5" codes)"
printf '    earlier calls replayed during the outage: %s accepted; after it: %s accepted\n' \
  "$(field "$during" ok)" "$(field "$after" ok)"
[ "$(field "$during" ok)" -eq 0 ] && [ "$(field "$after" ok)" -eq 0 ] || fail "outage: replays accepted"
python3 - "$work/timeline.tsv" "$down_ms" "$up_ms" <<'EOP' || fail "outage: see the line above"
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
down, up = int(sys.argv[2]), int(sys.argv[3])
bad = {c for t, c in rows if c not in ("ok", "ServiceUnavailable")}
ok_after = [int(t) for t, c in rows if c == "ok" and int(t) > up]
last_503 = max([int(t) for t, c in rows if c == "ServiceUnavailable"], default=down)
back = (min(ok_after) - up) / 1000 if ok_after else None
print(f"    answers other than ok/503: {sorted(bad) or 'none'}; first ok {back} s after Redis was back; last 503 {(last_503 - up) / 1000:+.2f} s after")
sys.exit(0 if not bad and back is not None and back <= 2 else 1)
EOP

say "6. two tokens (A shared through p11-kit server, B loaded by each replica): A killed under $rate calls/s, back 3 s later"
TOKEN_PIN=1234 bash scripts/make-softhsm-token.sh "$work/B" cluster-B >/dev/null
for i in 1 2 3; do stop_proc "replica$i"; replica "$i" yes 0 AB; done
load "$(addrs 1 2 3)" rate "$rate" "$fault_s" >"$work/r6.json" &
loader=$!
sleep 3; stop_proc p11kit-A KILL; sleep 3; token A
wait "$loader"; r6=$(cat "$work/r6.json")
printf '    %s calls: %s ok, codes %s\n' "$(field "$r6" count)" "$(field "$r6" ok)" "$(field "$r6" codes)"
# 3 replicas x 1 session on token A (workers = 2 split over 2 tokens): at most
# the calls in flight on it when it went away.
[ "$(field "$r6" errors)" -le 3 ] || fail "token kill: $(field "$r6" errors) failed calls"
b_keys=$(keys_on B '') a_state=$(curl -fs "http://127.0.0.1:${replica_port[1]}/healthz" || true)
printf '    keys made on token B: %s; replica 1 /healthz after: %s\n' "$b_keys" "$a_state"

say "7. cost of sharing: p50 of $latency_n pooled calls through one replica, Redis against in memory (each on an empty token)"
fresh_token_a; replica 1 yes; fill_pools 1
with=$(load "$(addrs 1)" rate 10 $((latency_n / 10)))
fresh_token_a; replica 1 no; fill_pools 1
without=$(load "$(addrs 1)" rate 10 $((latency_n / 10)))
printf '    p50 with Redis %s ms, in memory %s ms (p99 %s and %s ms)\n' "$(field "$with" p50_ms)" "$(field "$without" p50_ms)" \
  "$(field "$with" p99_ms)" "$(field "$without" p99_ms)"

say "8. pooled throughput, 1 replica against 3 (closed loop, 8 clients, $((2 * pool)) calls, each on an empty token)"
n8=$((2 * pool))
fresh_token_a; replica 1 yes; fill_pools 1
one=$(load "$(addrs 1)" closed "$n8" 8 120)
fresh_token_a; for i in 1 2 3; do replica "$i" yes; done; fill_pools 1 2 3
three=$(load "$(addrs 1 2 3)" closed "$n8" 8 120)
printf '    1 replica %s calls/s (p50 %s ms), 3 replicas %s calls/s (p50 %s ms); errors %s and %s\n' \
  "$(field "$one" throughput)" "$(field "$one" p50_ms)" "$(field "$three" throughput)" "$(field "$three" p50_ms)" \
  "$(field "$one" errors)" "$(field "$three" errors)"

if [ ${#failures[@]} -gt 0 ]; then
  printf 'cluster scenarios FAILED:\n' >&2; printf '  %s\n' "${failures[@]}" >&2; exit 1
fi
say "all cluster scenarios passed"
