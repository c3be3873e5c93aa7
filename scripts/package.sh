#!/usr/bin/env bash
# usage: scripts/package.sh
#
# Builds the Debian package target/debian/hsm-csr_<version>-1_<arch>.deb with
# cargo-deb ([package.metadata.deb] in Cargo.toml): the release binary, the
# commented example config as the conffile /etc/hsm-csr/hsm-csr.toml (and a
# pristine copy in /usr/share/doc/hsm-csr/examples/), man pages and bash, zsh
# and fish completions made by the binary itself (`hsm-csr generate`), and
# hsm-csr.service (packaging/debian/, installed disabled). Installs cargo-deb
# (cargo install) and dpkg-dev when missing. Prints the package's path.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"

need_packages dpkg-dev   # dpkg-shlibdeps, for the package's Depends
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
if ! cargo deb --version >/dev/null 2>&1; then
  say "installing cargo-deb (cargo install cargo-deb --locked)"
  cargo install cargo-deb --locked
fi

say "building hsm-csr (release)"
cargo build --release --locked
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
bin=$target/release/hsm-csr
assets=$target/release/package-assets
rm -rf "$assets"
"$bin" generate man --dir "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1   # Debian policy: man pages compressed, reproducibly (-n)
for shell in bash zsh fish; do
  "$bin" generate completions "$shell" --dir "$assets/completions" >/dev/null
done

say "cargo deb"
# --no-build: the binary above is the one the man pages were made from.
deb=$(cargo deb --locked --no-build --quiet)
[ -f "$deb" ] || die "cargo deb did not print the package's path (got: $deb)"
printf '%s\n' "$deb"
