#!/usr/bin/env bash
# usage: scripts/tokens/stop.sh DIR — stops every daemon setup.sh DIR started.
set -u
dir=${1:?usage: stop.sh DIR}
for pid in "$dir"/tpm2/abrmd.pid "$dir"/tpm2/swtpm.pid "$dir"/tpm2/dbus.pid "$dir"/p11kit/server.pid; do
  [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
done
# openCryptoki's pkcsslotd is not stopped here: it runs in run.sh's private
# PID namespace and dies with it. /run/pkcsslotd.pid out here, if any, is
# the host's own.
sleep 0.5   # let them exit before the caller removes their files
exit 0
