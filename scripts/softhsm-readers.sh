#!/usr/bin/env bash
# usage: scripts/softhsm-readers.sh      (READERS_RUNS=N to change the run count; default 40)
#
# What the installed SoftHSM2 does to keys being made while a second
# process reads the token, and what hsm-csr does about it. SoftHSM before
# 2.7.0 (Debian 12 ships 2.6.1) lets the reader load an object file that is
# still being written and write its partial copy back (SoftHSM issue #573):
# the new key loses its CKA_ID, or its private half comes back with
# CKA_SENSITIVE false. hsm-csr reads both halves back before it uses a key,
# refuses a spoiled one and destroys it.
#
# N `hsm-csr create` (RSA-2048) on a private token, first alone, then beside
# a process that keeps a session open and reads every key's CKA_ID every
# 2 ms (PyKCS11, as a monitoring agent or another replica would; a fresh
# `pkcs11-tool --list-objects` per read spoils far fewer). For each: CSRs
# made, calls refused, and key objects left on the token that are not part
# of a whole pair (a private and a public key under one CKA_ID), as
# `pkcs11-tool --list-objects` lists them. Needs .venv-test (scripts/test.sh
# makes it).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$REPO_ROOT"
runs=${READERS_RUNS:-40}

need_packages softhsm2 opensc
python=$REPO_ROOT/.venv-test/bin/python
"$python" -c 'import PyKCS11' 2>/dev/null || die "no .venv-test with PyKCS11: run scripts/test.sh first"
cargo build --release --quiet --locked
bin=$REPO_ROOT/target/release/hsm-csr

work=$(mktemp -d /tmp/hsm-csr-readers.XXXXXX)
reader=
trap '[ -z "$reader" ] || kill "$reader" 2>/dev/null; rm -rf "$work"' EXIT

# Key objects on the token: one line per object, "CLASS ID" (ID "-" when
# the object has none).
objects() {
  pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$1" --login --pin 1234 \
    --list-objects 2>/dev/null |
    awk '/^(Private|Public) Key Object/ { if (c) print c, (id ? id : "-"); c = $1; id = "" }
         /^[[:space:]]+ID:/ { id = $2 }
         END { if (c) print c, (id ? id : "-") }'
}

# run LABEL WITH_READER: prints "made REFUSED left-not-whole".
run() {
  local label=$1 with_reader=$2 made=0 refused=0
  TOKEN_PIN=1234 bash scripts/make-softhsm-token.sh "$work/$label" "$label" >/dev/null
  export SOFTHSM2_CONF=$work/$label/softhsm2.conf HSM_CSR_PIN=1234
  if [ "$with_reader" = yes ]; then
    PYTHONPATH=tests/tools "$python" -c '
import sys, time, PyKCS11, p11session
session = p11session.login(sys.argv[1], sys.argv[2])
while True:
    for obj in session.findObjects([]):
        try:
            session.getAttributeValue(obj, [PyKCS11.CKA_ID])
        except PyKCS11.PyKCS11Error:
            pass
    time.sleep(0.002)
' "$SOFTHSM_MODULE" "$label" &
    reader=$!
    sleep 1
  fi
  for i in $(seq 1 "$runs"); do
    if "$bin" create --module "$SOFTHSM_MODULE" --token "$label" --key-type rsa \
      --key-size 2048 --common-name "r$i.example.com" >"$work/out" 2>&1; then
      made=$((made + 1))
    else
      refused=$((refused + 1))
      grep -o '"Message": "[^"]*"' "$work/out" >>"$work/refusals" || true
    fi
  done
  if [ -n "$reader" ]; then
    kill "$reader" 2>/dev/null || true
    wait "$reader" 2>/dev/null || true
    reader=
  fi
  local not_whole
  not_whole=$(objects "$label" | awk '{ n[$2]++; c[$2] = c[$2] $1 }
    END { for (id in n) if (id == "-" || n[id] != 2 || c[id] !~ /Private/ || c[id] !~ /Public/) bad += n[id]; print bad + 0 }')
  echo "$made $refused $not_whole"
}

say "SoftHSM2: $(pkcs11-tool --module "$SOFTHSM_MODULE" --show-info 2>/dev/null | awk -F'[()]' '/^Library/ { print $2 }')"
read -r made_a refused_a left_a < <(run alone no)
read -r made_r refused_r left_r < <(run beside yes)
printf '%-34s %6s %8s %30s\n' "" "made" "refused" "key objects not in a whole pair"
printf '%-34s %6d %8d %30d\n' "$runs creates, alone" "$made_a" "$refused_a" "$left_a"
printf '%-34s %6d %8d %30d\n' "$runs creates, beside a reader" "$made_r" "$refused_r" "$left_r"
if [ -s "$work/refusals" ]; then
  echo "what the refused calls said:"
  sort "$work/refusals" | uniq -c | sort -rn
fi
