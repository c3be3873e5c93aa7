#!/usr/bin/env bash
# usage: scripts/test.sh
#
# Exactly what CI runs (.ci/run calls this): installs what the tests need,
# then cargo fmt --check, clippy -D warnings, every test (each integration
# test makes its own private SoftHSM2 token), and a short benchmark run so
# scripts/bench.sh is known to work.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

need_packages softhsm2 opensc openssl libengine-pkcs11-openssl
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"

# PyKCS11 reads attributes the way any other PKCS#11 application would.
if ! .venv-test/bin/python -c 'import PyKCS11' 2>/dev/null; then
  say "creating .venv-test with PyKCS11"
  python3 -m venv .venv-test 2>/dev/null || { need_packages python3-venv; python3 -m venv .venv-test; }
  .venv-test/bin/pip install -q --disable-pip-version-check 'PyKCS11>=1.5.17,<2'
fi
export HSM_CSR_TEST_PYTHON=$REPO_ROOT/.venv-test/bin/python

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings
say "cargo test"
cargo test --locked
say "scripts/bench.sh (short run)"
BENCH_RUNS=3 bash scripts/bench.sh >/dev/null
say "all checks passed"
