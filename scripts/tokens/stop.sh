#!/usr/bin/env bash
# usage: scripts/tokens/stop.sh DIR — stops every daemon setup.sh DIR started.
set -u
dir=${1:?usage: stop.sh DIR}
for pid in "$dir"/tpm2/abrmd.pid "$dir"/tpm2/swtpm.pid "$dir"/tpm2/dbus.pid "$dir"/p11kit/server.pid; do
  [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
done
if [ -f "$dir/opencryptoki.env" ] && [ -f /run/pkcsslotd.pid ]; then
  kill "$(cat /run/pkcsslotd.pid)" 2>/dev/null
fi
exit 0
