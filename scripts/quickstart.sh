#!/usr/bin/env bash
# usage: scripts/quickstart.sh [COMMON_NAME]
#
# From a fresh Debian machine to a CSR on the command line and one served
# over the cloud's API:
#  1. installs SoftHSM2 and openssl if missing, and builds hsm-csr
#     (target/release/hsm-csr, every command; cargo's progress shows);
#  2. the first time, makes a demo token under .demo-token/ (git-ignored,
#     kept between runs) and beside it a serve config, .demo-token/serve.toml
#     (absolute paths, so it works from any directory), with a random access
#     key whose secret is in .demo-token/access-key-secret (mode 0600);
#  3. prints the JSON answer of `hsm-csr create` for COMMON_NAME (default
#     www.example.com; its key is labelled hsm-csr-demo:quickstart.COMMON_NAME,
#     so the README's examples never find two keys);
#  4. starts `hsm-csr serve` on a free loopback port, calls it once with
#     `hsm-csr call` (a signed CreateCdnCertificateSigningRequest), prints the
#     answer, and stops the server;
#  5. checks both CSRs with `openssl req -verify`, and prints the lines that
#     serve the demo token and call it.
# The answers go to stdout, progress and the closing lines to stderr.
# HSM_CSR_DEMO_DIR puts the demo token elsewhere (scripts/test.sh uses a
# scratch directory, so that your own demo token is left as it is).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"
common_name=${1:-www.example.com}

need_packages softhsm2 openssl
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
say "building hsm-csr (release, every command; the first build takes a few minutes)"
cargo build --release --locked --bin hsm-csr
bin=$REPO_ROOT/target/release/hsm-csr

demo=${HSM_CSR_DEMO_DIR:-$REPO_ROOT/.demo-token}
if [ ! -f "$demo/softhsm2.conf" ]; then
  say "creating the demo SoftHSM2 token in $demo"
  bash scripts/make-softhsm-token.sh "$demo" hsm-csr-demo
fi
demo=$(cd "$demo" && pwd)
export SOFTHSM2_CONF=$demo/softhsm2.conf
serve_config=$demo/serve.toml
if [ ! -f "$serve_config" ]; then
  say "writing $demo/serve.toml and a random access key (its secret in $demo/access-key-secret)"
  (
    umask 077
    printf '%s\n' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$demo/access-key-secret"
    access_key=demo-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
    cat >"$serve_config.new" <<EOF
# Made by scripts/quickstart.sh for the demo token in this directory. Every
# path is absolute, so the file works from anywhere. Demo only: the PIN and
# the access key's secret sit beside it.
[token]
module = "/usr/lib/softhsm/libsofthsm2.so"
label = "hsm-csr-demo"
pin_file = "$demo/user-pin"

[key]
bits = 2048
label_prefix = "hsm-csr-demo:"

[service]
listen = "127.0.0.1:8080"
# The API explorer at /explorer: sign and send calls from a browser.
explorer = true

[[service.access_keys]]
id = "$access_key"
secret_file = "$demo/access-key-secret"
actions = ["*"]
EOF
    mv "$serve_config.new" "$serve_config"
  )
fi
# A serve.toml from before the explorer existed gets it turned on too.
if ! grep -q '^explorer *=' "$serve_config"; then
  sed -i 's/^\[service\]$/[service]\nexplorer = true/' "$serve_config"
fi
access_key=$(sed -n 's/^id = "\(.*\)"$/\1/p' "$serve_config")

verify() { # $1: what, stdin: an answer's JSON
  local csr
  csr=$(sed -n 's/^ *"Csr": "\(.*\)",\{0,1\}$/\1/p')
  printf '%b' "$csr" | openssl req -verify -noout 2>&1 | grep -q 'verify OK' \
    || die "$1: openssl req -verify did not say 'verify OK'"
  say "$1: openssl req -verify: OK"
}

say "hsm-csr create --config $serve_config --common-name $common_name"
answer=$("$bin" create --config "$serve_config" --label-prefix "hsm-csr-demo:quickstart." \
  --common-name "$common_name")
printf '%s\n' "$answer"
verify "the command-line CSR" <<<"$answer"

say "hsm-csr serve on a free loopback port"
log=$(mktemp)
"$bin" serve --config "$serve_config" --listen 127.0.0.1:0 2>"$log" &
serve_pid=$!
stop_serve() {
  [ -n "${serve_pid:-}" ] || return 0
  kill "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
  serve_pid=
}
trap 'stop_serve; rm -f "$log"' EXIT
address=
for _ in $(seq 300); do
  address=$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "$log" | head -n1)
  [ -n "$address" ] && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$log" >&2; die "hsm-csr serve stopped (its log is above)"; }
  sleep 0.1
done
[ -n "$address" ] || { cat "$log" >&2; die "hsm-csr serve did not start within 30 s (its log is above)"; }

served_name=served.$common_name
say "hsm-csr call --endpoint http://$address CreateCdnCertificateSigningRequest CommonName=$served_name"
answer=$(ALIBABA_CLOUD_ACCESS_KEY_ID=$access_key "$bin" call --endpoint "http://$address" \
  --secret-file "$demo/access-key-secret" CreateCdnCertificateSigningRequest "CommonName=$served_name") \
  || { cat "$log" >&2; die "the signed call failed (serve's log is above)"; }
printf '%s\n' "$answer"
verify "the served CSR" <<<"$answer"
# One GET through bash's /dev/tcp: a fresh machine may have no curl.
explorer_status=$(exec 3<>"/dev/tcp/${address%:*}/${address##*:}" \
  && printf 'GET /explorer HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$address" >&3 \
  && head -n1 <&3) || true
case $explorer_status in
  'HTTP/1.1 200'*) ;;
  *) cat "$log" >&2; die "hsm-csr serve did not serve the API explorer at http://$address/explorer ($explorer_status)" ;;
esac
say "the API explorer answers at http://$address/explorer"
stop_serve
say "hsm-csr serve stopped"

# SoftHSM2 finds the demo token only through SOFTHSM2_CONF.
say "to serve the demo token (and the API explorer, in a browser on this machine), and to call it from another shell:"
printf '    SOFTHSM2_CONF=%q %q serve --config %q   # API explorer: http://127.0.0.1:8080/explorer (AccessKeyId %s, its secret in %q)\n' \
  "$SOFTHSM2_CONF" "$bin" "$serve_config" "$access_key" "$demo/access-key-secret" >&2
printf '    ALIBABA_CLOUD_ACCESS_KEY_ID=%q %q call --endpoint http://127.0.0.1:8080 --secret-file %q CreateCdnCertificateSigningRequest CommonName=%q\n' \
  "$access_key" "$bin" "$demo/access-key-secret" "$common_name" >&2
