#!/usr/bin/env bash
# usage: scripts/quickstart.sh [COMMON_NAME]
#
# From a fresh Debian machine to a real CSR: installs SoftHSM2 if missing,
# builds hsm-csr (the command line only, with cargo's progress), creates a
# local demo token under .demo-token/ (git-ignored; kept between runs),
# prints the JSON response for COMMON_NAME (default www.example.com) on
# stdout, then, on stderr, the `export SOFTHSM2_CONF=...` line that the
# demo token needs in your own shell.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"
common_name=${1:-www.example.com}

need_packages softhsm2
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
# Only what `create` needs: no HTTP service, TLS or ACME client (less than
# half the full build's time; docs/install.md has both figures).
# `cargo build --release` later makes the full binary, `serve` included.
say "building hsm-csr (release; the command line only: no serve, no acme)"
cargo build --release --locked --no-default-features --features cli --bin hsm-csr

if [ ! -f .demo-token/softhsm2.conf ]; then
  say "creating the demo SoftHSM2 token in .demo-token/"
  bash scripts/make-softhsm-token.sh .demo-token hsm-csr-demo
fi
export SOFTHSM2_CONF=$REPO_ROOT/.demo-token/softhsm2.conf
say "hsm-csr create --config config/softhsm-demo.toml --common-name $common_name"
target/release/hsm-csr create --config config/softhsm-demo.toml --common-name "$common_name"

# SoftHSM2 finds the demo token only through SOFTHSM2_CONF: without it,
# hsm-csr answers Token.NotFound (or cannot initialise the module).
say "to use the demo token from your shell, first run:"
printf '    export SOFTHSM2_CONF=%q\n' "$SOFTHSM2_CONF" >&2
printf '    target/release/hsm-csr create --config config/softhsm-demo.toml --common-name %q\n' "$common_name" >&2
