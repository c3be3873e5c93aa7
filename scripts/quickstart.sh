#!/usr/bin/env bash
# usage: scripts/quickstart.sh [COMMON_NAME]
#
# From a fresh Debian machine to a real CSR: installs SoftHSM2 if missing,
# builds hsm-csr, creates a local demo token under .demo-token/ (git-ignored;
# kept between runs), and prints the JSON response for COMMON_NAME
# (default www.example.com).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"
common_name=${1:-www.example.com}

need_packages softhsm2
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
say "building hsm-csr (release)"
cargo build --release --quiet --locked

if [ ! -f .demo-token/softhsm2.conf ]; then
  say "creating the demo SoftHSM2 token in .demo-token/"
  bash scripts/make-softhsm-token.sh .demo-token hsm-csr-demo
fi
export SOFTHSM2_CONF=$REPO_ROOT/.demo-token/softhsm2.conf
say "hsm-csr create --config config/softhsm-demo.toml --common-name $common_name"
target/release/hsm-csr create --config config/softhsm-demo.toml --common-name "$common_name"
