#!/usr/bin/env bash
# usage: scripts/make-softhsm-token.sh DIR LABEL
#
# Creates a private SoftHSM2 token store in DIR with one initialised token
# called LABEL: DIR/softhsm2.conf (point SOFTHSM2_CONF at it), DIR/tokens/,
# and the PINs in DIR/user-pin and DIR/so-pin (mode 600). The user PIN is
# $TOKEN_PIN when set, else random. Refuses to touch an existing DIR.
set -euo pipefail
dir=${1:?usage: make-softhsm-token.sh DIR LABEL}
label=${2:?usage: make-softhsm-token.sh DIR LABEL}
[ -e "$dir/softhsm2.conf" ] && { echo "error: $dir already holds a token store" >&2; exit 1; }
command -v softhsm2-util >/dev/null || { echo "error: softhsm2-util not found (apt-get install softhsm2)" >&2; exit 1; }

umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
random_digits() { od -An -N8 -tu8 /dev/urandom | tr -dc 0-9 | cut -c1-"$1"; }
pin=${TOKEN_PIN:-$(random_digits 8)}
so_pin=$(random_digits 12)
printf '%s\n' "$pin" > "$dir/user-pin"
printf '%s\n' "$so_pin" > "$dir/so-pin"
# The conf is written under another name and moved into place only once the
# token is initialised, so a failed run does not look like a finished store.
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$dir" > "$dir/softhsm2.conf.new"
# PINs go through files, not argv, where softhsm2-util allows it: it does
# not, so they are visible to `ps` for the few milliseconds of this call.
SOFTHSM2_CONF=$dir/softhsm2.conf.new softhsm2-util --init-token --free --label "$label" \
  --so-pin "$so_pin" --pin "$pin" >/dev/null
mv "$dir/softhsm2.conf.new" "$dir/softhsm2.conf"
