#!/usr/bin/env bash
# usage: scripts/public-api.sh [--list]
#
# Counts the library's public items as rustdoc sees them: every item
# reachable by a path from the crate root (re-exports counted where they
# are exported, modules included), from `cargo +nightly rustdoc
# --output-format json`. Prints "items N modules M {kind: count}" (M counts
# the crate root); --list prints each item with its kind. tests/surface.rs
# is the gate (it compares the `pub` declarations with docs/library.md and
# needs no nightly); this script is where docs/library.md's figures come
# from. Needs a nightly toolchain (`rustup toolchain list`).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

case "${1:-}" in
  "") list= ;;
  --list) list=all ;;
  *) die "usage: scripts/public-api.sh [--list]" ;;
esac

rustup toolchain list 2>/dev/null | grep -q '^nightly' ||
  die "no nightly toolchain: rustdoc's JSON output is unstable (rustup toolchain install nightly)"
target=$REPO_ROOT/target/public-api
CARGO_TARGET_DIR=$target cargo +nightly rustdoc -q --lib -- -Z unstable-options --output-format json
python3 scripts/lib/public_api.py "$target/doc/hsm_csr.json" $list
