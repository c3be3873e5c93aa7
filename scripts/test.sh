#!/usr/bin/env bash
# usage: scripts/test.sh
#
# Exactly what CI runs (.ci/run calls this): installs what the tests need,
# then cargo fmt --check, clippy -D warnings, cargo doc -D warnings,
# scripts/mutants.sh --changed
# (mutation testing of what changed in the parsers since their last run
# with 0 missed: nothing, when scripts/mutants.baseline is current), and
# every test:
#  - unit tests, and the integration suite on private SoftHSM2 tokens (one
#    per test, in parallel);
#  - the crash test (tests/crash.rs): serve (pool on and off), create,
#    batch, acme issue and renew killed with SIGKILL and SIGINT at random
#    points, some with a slowed audit log, restarted; its counts per mode
#    are printed after the suite (0 orphans in every mode);
#  - the Debian package (scripts/package.sh), which the suite then unpacks
#    into a scratch root and runs (tests/package.rs);
#  - the same integration suite on openCryptoki, tpm2-pkcs11 (swtpm) and
#    SoftHSM behind p11-kit remoting, one shared token each, one test at a
#    time (scripts/tokens/run.sh); cases a token cannot do are listed; the
#    host's /etc/opencryptoki and /var/lib/opencryptoki must be unchanged;
#    tests that do not depend on the token (docs, the pebble harness, the
#    Redis state, certbot's CA checks) and the crash test (it restores
#    SoftHSM's files) run on SoftHSM2 only;
# and short runs of scripts/cluster.sh (the scale-out scenarios),
# scripts/bench.sh, scripts/load.sh and scripts/netbench.sh (the token
# behind p11-kit and a delaying relay; its table is printed), so all four
# are known to work, and scripts/fairness.sh with a loose bound (5x; a full
# run's bound is 3x).
# HSM_CSR_TOKENS="opencryptoki tpm2 p11kit" chooses the extra tokens
# ("" for none).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

need_packages softhsm2 opensc openssl libengine-pkcs11-openssl p11-kit p11-kit-modules redis-server redis-tools \
  pebble certbot curl chromium chromium-driver
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"

# PyKCS11 reads attributes the way any other PKCS#11 application would; the
# official Alibaba Cloud SDKs (both generations) call `hsm-csr serve`;
# Selenium drives Chromium through /explorer (tests/explorer.rs).
python_packages=(
  'PyKCS11>=1.5.17,<2'
  'alibabacloud-cdn20180510==9.2.0' 'alibabacloud-dcdn20180115==3.1.0' 'alibabacloud-tea-openapi==0.4.6'
  'aliyun-python-sdk-core==2.16.1' 'aliyun-python-sdk-cdn==3.8.8' 'aliyun-python-sdk-dcdn==2.2.19'
  'selenium==4.27.1'
)
if ! .venv-test/bin/python -c 'import PyKCS11, alibabacloud_cdn20180510, alibabacloud_dcdn20180115, aliyunsdkcdn, aliyunsdkdcdn, selenium' 2>/dev/null; then
  say "creating .venv-test with PyKCS11, the Alibaba Cloud SDKs and Selenium"
  [ -x .venv-test/bin/python ] || python3 -m venv .venv-test 2>/dev/null || { need_packages python3-venv; python3 -m venv .venv-test; }
  .venv-test/bin/pip install -q --disable-pip-version-check "${python_packages[@]}"
fi
export HSM_CSR_TEST_PYTHON=$REPO_ROOT/.venv-test/bin/python
# acme2certifier: an ACME server with renewal information (RFC 9773), which
# Debian's pebble lacks; with Python's acme package, an independent client.
if ! .venv-acme/bin/python -c 'import acme2certifier, acme.client' 2>/dev/null; then
  say "creating .venv-acme with acme2certifier"
  [ -x .venv-acme/bin/python ] || python3 -m venv .venv-acme
  .venv-acme/bin/pip install -q --disable-pip-version-check 'acme2certifier==0.46.3' 'acme==5.9.0'
fi
export HSM_CSR_TEST_ACME_PYTHON=$REPO_ROOT/.venv-acme/bin/python

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings
say "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps
say "library without default features: no HTTP, TLS, async or CLI crates"
cargo check --locked --no-default-features --lib
cargo clippy --locked --no-default-features --lib --tests -- -D warnings
if cargo tree --locked -e normal --no-default-features --prefix none \
    | grep -E '^(axum|hyper|hyper-util|tokio|tokio-rustls|rustls|tower|h2|http|http-body|mio|prometheus-client|clap|indicatif|rpassword|tempfile) v'; then
  die "cargo tree --no-default-features shows the crates above; gate them behind the service or cli feature"
fi
say "scripts/mutants.sh --changed: the mutated files' lines changed since their last run with 0 missed"
bash scripts/mutants.sh --changed
say "Debian package (scripts/package.sh)"
need_packages man-db systemd
HSM_CSR_TEST_DEB=$(bash scripts/package.sh)
export HSM_CSR_TEST_DEB
# tally NAME LOG SKIPS: one line of counts for an integration run whose
# output is LOG and whose skipped tests (tests/common skip, skip_part) are
# listed in SKIPS. A test that returned early is counted as skipped with its
# reason, never as passed; one that skipped a case (a mechanism the token
# lacks) ran, and its skipped case is listed.
tallies=()
tally() {
  local name=$1 log=$2 skips=$3 result passed failed ignored skipped parts
  result=$(awk '/Running tests\/integration.rs/ { on = 1 } on && /^test result:/ { print; exit }' "$log")
  [ -n "$result" ] || die "no result of tests/integration.rs in $log"
  passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$result")
  failed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$result")
  ignored=$(sed -E 's/.* ([0-9]+) ignored.*/\1/' <<<"$result")
  # No file is no skip (awk, not grep: no match must not fail the script).
  [ -e "$skips" ] || : > "$skips"
  skipped=$(awk '$1 == "SKIPPED" { print $2 }' "$skips" | sort -u | wc -l)
  parts=$(awk '$1 == "PART" && $2 == "SKIPPED" { print $3 }' "$skips" | sort -u | wc -l)
  tallies+=("$(printf '%-12s %3d tests: %3d ran, %3d passed, %3d skipped, %d failed, %d ignored (%d ran with a case skipped)' \
    "$name" $((passed + failed + ignored)) $((passed + failed - skipped)) $((passed - skipped)) "$skipped" "$failed" \
    "$ignored" "$parts")")
  printf '%s\n' "${tallies[-1]}" >&2
  if [ -s "$skips" ]; then sort -u "$skips" | sed 's/^/    /' >&2; fi
}

say "cargo test (private SoftHSM2 tokens)"
# The crash tests (tests/crash.rs) append one line of counts per mode here.
crash_report=$REPO_ROOT/target/crash-report.txt
rm -f "$crash_report" target/softhsm2.skipped
HSM_CSR_CRASH_REPORT=$crash_report HSM_CSR_TEST_SKIP_LOG=$REPO_ROOT/target/softhsm2.skipped \
  cargo test --locked 2>&1 | tee target/softhsm2.log
tally softhsm2 target/softhsm2.log target/softhsm2.skipped
say "crash test: every mode killed with SIGKILL and SIGINT, restarted, the token's keys counted"
cat "$crash_report"
[ "$(wc -l < "$crash_report")" -eq 6 ] || die "the crash test reported $(wc -l < "$crash_report") of its 6 modes"

say "scripts/quickstart.sh, twice, on a scratch demo token: a command-line and a served CSR each time"
demo_dir=$(mktemp -d /tmp/hsm-csr-demo.XXXXXX)
for run in 1 2; do
  HSM_CSR_DEMO_DIR=$demo_dir bash scripts/quickstart.sh >/dev/null 2>"$demo_dir.err" \
    || { cat "$demo_dir.err" >&2; die "scripts/quickstart.sh failed (run $run; its output is above)"; }
  [ "$(grep -c 'openssl req -verify: OK' "$demo_dir.err")" -eq 2 ] \
    || { cat "$demo_dir.err" >&2; die "scripts/quickstart.sh did not verify two CSRs (run $run)"; }
  grep -q 'serve --config .*# API explorer: http://127.0.0.1:8080/explorer' "$demo_dir.err" \
    || { cat "$demo_dir.err" >&2; die "scripts/quickstart.sh did not print the explorer's address with its serve line (run $run)"; }
done
! pgrep -f "$demo_dir/serve.toml" >/dev/null || die "scripts/quickstart.sh left hsm-csr serve running"
target/release/hsm-csr serve --help >/dev/null || die "after scripts/quickstart.sh, target/release/hsm-csr has no serve"
grep -A2 'to serve the demo token' "$demo_dir.err" >&2
say "scripts/acme-demo.sh on the same scratch demo token: pebble issues, the certificate is stored beside the key"
HSM_CSR_DEMO_DIR=$demo_dir bash scripts/acme-demo.sh >"$demo_dir.out" 2>"$demo_dir.err" \
  || { cat "$demo_dir.out" "$demo_dir.err" >&2; die "scripts/acme-demo.sh failed (its output is above)"; }
grep -E '^hsm-csr-demo:acme\.acme-demo\.example\.com .* yes ' "$demo_dir.out" >&2 \
  || { cat "$demo_dir.out" >&2; die "scripts/acme-demo.sh did not show a key with its certificate"; }
! pgrep -f "$demo_dir" >/dev/null || die "scripts/acme-demo.sh left a process running"
rm -rf "$demo_dir" "$demo_dir.err" "$demo_dir.out"

tokens=${HSM_CSR_TOKENS-opencryptoki tpm2 p11kit}
if [ -n "$tokens" ]; then
  tokdir=$(mktemp -d /tmp/hsm-csr-tok.XXXXXX)
  # The extra tokens must leave a host's own openCryptoki as they found it:
  # checked after the passes, and on the way out if one of them fails.
  case " $tokens " in *" opencryptoki "*) need_packages opencryptoki ;; esac
  host_opencryptoki=$(opencryptoki_state)
  opencryptoki_unchanged() {
    [ "$(opencryptoki_state)" = "$host_opencryptoki" ] && return 0
    diff <(printf '%s\n' "$host_opencryptoki") <(opencryptoki_state) >&2 || true
    printf 'error: %s\n' "the token passes changed this host's /etc/opencryptoki or /var/lib/opencryptoki (diff above)" >&2
    return 1
  }
  trap 'bash scripts/tokens/stop.sh "$tokdir"; rm -rf "$tokdir"; opencryptoki_unchanged || exit 1' EXIT
  for t in $tokens; do
    say "integration suite on $t"
    skipped=$tokdir/$t.skipped
    HSM_CSR_TEST_SKIP_LOG=$skipped bash scripts/tokens/run.sh "$tokdir" "$t" \
      cargo test --locked --test integration -- --test-threads=1 \
        --skip docs:: --skip pebble_harness:: --skip shared_state:: --skip ca_compliance:: \
        --skip crash:: 2>&1 | tee "$tokdir/$t.log"
    tally "$t" "$tokdir/$t.log" "$skipped"
  done
  opencryptoki_unchanged || exit 1
fi
say "scripts/cluster.sh (short counts): replicas, Redis, haproxy, a shared and a second token"
CLUSTER_SHORT=1 bash scripts/cluster.sh
say "scripts/bench.sh and scripts/load.sh (short runs)"
BENCH_RUNS=3 BENCH_BATCH=4 bash scripts/bench.sh >/dev/null
LOAD_REQUESTS=6 LOAD_SECONDS=5 LOAD_POOL=20 LOAD_BURST=20 LOAD_SOAK=10 LOAD_RATE_LIMIT=20 \
  bash scripts/load.sh >/dev/null
say "scripts/netbench.sh --short: the token at 0, 1, 2 and 5 ms one way (p11-kit server and a relay)"
NETBENCH_WORKERS="1 4" bash scripts/netbench.sh --short
say "scripts/fairness.sh: another access key's latency while one keeps 30 calls in flight"
FAIR_MAX_RATIO=${FAIR_MAX_RATIO:-5} bash scripts/fairness.sh
say "tests per token (skipped tests are listed with their reasons above)"
printf '    %s\n' "${tallies[@]}" >&2
say "all checks passed"
