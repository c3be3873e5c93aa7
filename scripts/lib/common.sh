# Shared by the scripts in scripts/: source it, don't run it.

# Repository root, whatever the caller's working directory.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need_packages PKG...: installs the Debian packages that are not installed yet.
need_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo=(sudo)
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_waiting "${sudo[@]}" apt-get update -q
  # apt-get check takes the dpkg lock and changes nothing: wait here, with a
  # message, rather than in the install's silent DPkg::Lock::Timeout.
  apt_waiting "${sudo[@]}" apt-get check -q || true
  apt_waiting "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
}

# apt_waiting CMD...: runs an apt-get command (stdout discarded); while
# another apt or dpkg holds a lock it needs, says so and tries again, for up
# to APT_LOCK_WAIT seconds (default 600). DPkg::Lock::Timeout alone is not
# enough: apt-get update does not wait for the lists lock, and apt waits
# silently.
apt_waiting() {
  local deadline=$((SECONDS + ${APT_LOCK_WAIT:-600})) err held
  while :; do
    if err=$("$@" 2>&1 >/dev/null); then
      [ -n "$err" ] && printf '%s\n' "$err" >&2
      return 0
    fi
    held=$(grep -m1 -o 'Could not get lock .*' <<<"$err") || { printf '%s\n' "$err" >&2; return 1; }
    if [ $SECONDS -ge $deadline ]; then
      printf '%s\n' "$err" >&2
      die "gave up after ${APT_LOCK_WAIT:-600} s waiting for another package manager to finish"
    fi
    say "waiting for another package manager to finish ($held); retrying in 5 s"
    sleep 5
  done
}

# opencryptoki_state: every file, directory and link under the host's
# /etc/opencryptoki and /var/lib/opencryptoki, with type, mode, owner, size
# and, for files, SHA-256; scripts/test.sh compares it before and after.
opencryptoki_state() {
  local d
  for d in /etc/opencryptoki /var/lib/opencryptoki; do
    [ -e "$d" ] || { echo "$d absent"; continue; }
    find "$d" -xdev -printf '%p %y %m %u:%g %s %l\n'
    find "$d" -xdev -type f -exec sha256sum {} +
  done | LC_ALL=C sort
}

SOFTHSM_MODULE=/usr/lib/softhsm/libsofthsm2.so
