#!/usr/bin/env bash
# usage: scripts/tokens/run.sh DIR TOKEN CMD [ARG...]
#
# Sets up TOKEN (scripts/tokens/setup.sh DIR TOKEN), then runs CMD with
# DIR/TOKEN.env sourced; exits with CMD's status. Daemons are stopped by
# scripts/tokens/stop.sh DIR, except openCryptoki's, see below.
#
# openCryptoki keeps its state in fixed system paths: /etc/opencryptoki,
# /var/lib/opencryptoki, /var/lock/opencryptoki, /var/log/opencryptoki, the
# pkcsslotd daemon's pid file and socket in /run, and shared memory. So that
# a host's own openCryptoki is never touched, its setup and CMD run in new
# mount, IPC and PID namespaces (unshare) where each of those is a private,
# empty tmpfs: nothing written there outlives CMD, and the pkcsslotd started
# there dies with it. Where namespaces are unavailable (not root, or a
# container without CAP_SYS_ADMIN), openCryptoki is refused, not run on the
# host. CMD then sees an empty /run.
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"
dir=${1:?usage: run.sh DIR TOKEN CMD...}; token=${2:?usage: run.sh DIR TOKEN CMD...}; shift 2
[ $# -gt 0 ] || die "usage: run.sh DIR TOKEN CMD..."
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

if [ "$token" = opencryptoki ] && [ "${HSM_CSR_PRIVATE_NS:-}" != "$(readlink /proc/self/ns/mnt)" ]; then
  # Installed out here: dpkg must write the host's /etc and /var, and the
  # mount points below must exist.
  need_packages opencryptoki opensc util-linux
  unshare --mount --ipc --pid --fork --mount-proc true 2>/dev/null || die \
    "openCryptoki needs private mount, IPC and PID namespaces (unshare, as root) so as not to touch
       this host's /etc/opencryptoki, /var/lib/opencryptoki and pkcsslotd, and they are unavailable
       here; leave opencryptoki out of HSM_CSR_TOKENS"
  exec unshare --mount --ipc --pid --fork --mount-proc --propagation private \
    bash -c '
      set -e
      for d in /run /dev/shm /etc/opencryptoki /var/lib/opencryptoki /var/log/opencryptoki; do
        mkdir -p "$d"   # no-op: the package made them, on the host
        mount -t tmpfs -o mode=0755,size=64m hsm-csr-private "$d"
      done
      chmod 1777 /dev/shm
      mkdir -m 1777 /run/lock
      # The namespace is known by its mount namespace, which nothing else shares.
      HSM_CSR_PRIVATE_NS=$(readlink /proc/self/ns/mnt) exec bash "$0" "$@"
    ' "$0" "$dir" "$token" "$@"
fi

bash "$REPO_ROOT/scripts/tokens/setup.sh" "$dir" "$token"
# shellcheck disable=SC1090
source "$dir/$token.env"
"$@"
