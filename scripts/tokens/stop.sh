#!/usr/bin/env bash
# usage: scripts/tokens/stop.sh DIR — stops every daemon setup.sh DIR started.
set -u
dir=${1:?usage: stop.sh DIR}
for pid in "$dir"/tpm2/abrmd.pid "$dir"/tpm2/swtpm.pid "$dir"/tpm2/dbus.pid "$dir"/p11kit/server.pid; do
  [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
done
# setup.sh starts pkcsslotd before it writes opencryptoki.env, so a failed
# setup is cleaned up too.
if [ -d "$dir" ] && [ -f /run/pkcsslotd.pid ]; then
  kill "$(cat /run/pkcsslotd.pid)" 2>/dev/null
fi
sleep 0.5   # let them exit before the caller removes their files
exit 0
