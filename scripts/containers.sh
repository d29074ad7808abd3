#!/usr/bin/env bash
# The project's podman and buildah settings, in one place. scripts/image.sh and tests/image/test.sh
# source it; run it with a command to run that command with the same settings:
#
#   scripts/containers.sh podman images
#   scripts/containers.sh podman run --rm localhost/stepwise-controller:0.1.0 --version
#
# It installs Debian's podman, buildah and runc when they are missing (as root, with apt-get, like
# tests/lab installs iptables), then writes a containers.conf and a storage.conf of the project's
# own and points CONTAINERS_CONF and CONTAINERS_STORAGE_CONF at them, so that the machine's global
# configuration and image store are neither read nor touched:
#  - images live in ~/.cache/stepwise/containers/storage (STEPWISE_CACHE moves it), with the vfs
#    driver: overlay needs a kernel and mount rights a container of CI may not have;
#  - the runtime is runc with the cgroupfs manager: crun, podman's default, refuses cgroups v1 in
#    "hybrid" mode, and there may be no systemd to manage cgroups;
#  - a container's open-files limit is the caller's own, and its processes limit 4096 (podman would
#    raise both to its defaults, which needs CAP_SYS_RESOURCE: a container of CI lacks it, and runc
#    fails with EPERM; conmon, which starts runc, has a processes limit of 32768 whatever the
#    caller's);
#  - containers share the host's network (what the tests need: the control plane and every server
#    listen on 127.0.0.1), so podman never makes a bridge, a veth or NAT rules on the machine;
#  - the run state (locks, the events log) is under /run, so that a reboot clears it.

# containers_apt PACKAGE...: installs Debian packages, as root. It waits for the dpkg lock (another
# script may be installing at the same moment); the package lists may be missing or stale (a fresh
# container): on a failure they are refreshed once.
containers_apt() {
  command -v apt-get >/dev/null || { echo "[containers] ERROR: $* missing and no apt-get to install them" >&2; return 1; }
  [ "$(id -u)" = 0 ] || { echo "[containers] ERROR: $* missing: run 'sudo apt-get install $*' once" >&2; return 1; }
  local log apt=(apt-get -o DPkg::Lock::Timeout=600 -y --no-install-recommends)
  log=$(mktemp)
  echo "[containers] installing Debian's $* (log $log)" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! "${apt[@]}" install "$@" >"$log" 2>&1; then
    { "${apt[@]}" update && "${apt[@]}" install "$@"; } >>"$log" 2>&1 ||
      { tail -n 20 "$log" >&2; echo "[containers] ERROR: apt-get install $* failed" >&2; return 1; }
  fi
  rm -f -- "$log"
}

# containers_packages: podman and runc to run the image, buildah to build it.
containers_packages() {
  local missing=() p
  for p in podman buildah runc; do command -v "$p" >/dev/null || missing+=("$p"); done
  [ "${#missing[@]}" = 0 ] || containers_apt "${missing[@]}"
}

# containers_limit OPTION MAX: the caller's hard limit (ulimit -H OPTION), at most MAX.
containers_limit() {
  local v
  v=$(ulimit -H "$1")
  if [ "$v" = unlimited ] || [ "$v" -gt "$2" ]; then v=$2; fi
  echo "$v"
}

# containers_env: writes the two files (again each time: the limits are the caller's) and exports
# their paths.
containers_env() {
  containers_packages || return 1
  local cache=${STEPWISE_CACHE:-$HOME/.cache/stepwise}/containers run nofile nproc storage_tmp containers_tmp
  if [ "$(id -u)" = 0 ]; then run=/run/stepwise-containers; else run=${XDG_RUNTIME_DIR:-/tmp}/stepwise-containers-$(id -u); fi
  mkdir -p "$cache/storage" "$run"
  nofile=$(containers_limit -n 1048576)
  # The controller runs a few dozen threads.
  nproc=$(containers_limit -u 4096)
  # Written aside and renamed into place: scripts running side by side never read a half-written
  # file.
  storage_tmp=$(mktemp "$cache/.storage.conf.XXXXXX")
  containers_tmp=$(mktemp "$cache/.containers.conf.XXXXXX")
  cat >"$storage_tmp" <<EOF
# Written by scripts/containers.sh.
[storage]
driver = "vfs"
graphroot = "$cache/storage"
runroot = "$run/storage"
EOF
  cat >"$containers_tmp" <<EOF
# Written by scripts/containers.sh.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"
netns = "host"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$run/events.log"
tmp_dir = "$run/libpod"
EOF
  chmod 644 "$storage_tmp" "$containers_tmp"
  mv -f "$storage_tmp" "$cache/storage.conf"
  mv -f "$containers_tmp" "$cache/containers.conf"
  export CONTAINERS_STORAGE_CONF=$cache/storage.conf CONTAINERS_CONF=$cache/containers.conf
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ "$#" -gt 0 ] || { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
  containers_env
  exec "$@"
fi
