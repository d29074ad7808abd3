# Shared helpers of the lab scripts. Sourced, never executed.
# shellcheck shell=bash
#
# The safety rule: everything of the lab runs inside a network namespace that this file creates
# and that has ONLY the loopback interface. Pod, Service and lab addresses are made local to that
# loopback, so they are real there and nowhere else. No interface, bridge or route leading out of
# the namespace is ever added, and nothing here touches the machine's own network namespace.

LAB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_SRC/../.." && pwd)
LAB_STATE=${STEPWISE_LAB_DIR:-$REPO_ROOT/target/lab}
LAB_RUN=$LAB_STATE/run
LAB_LOGS=$LAB_STATE/logs
LAB_ENV=$LAB_STATE/env
# The lab's control plane: tests/cluster's scripts, with their state kept apart from the plain
# cluster's (which may run at the same time, in the machine's own namespace).
export STEPWISE_CLUSTER_DIR=$LAB_STATE/cluster
# Its pods terminate as a kubelet's do: they keep their address while the app drains.
export STEPWISE_KWOK_EXTRA_STAGES=$LAB_SRC/kwok-stages.yaml

# The address ranges made local inside the namespace: kwok's pod CIDR, the Service CIDR of
# tests/cluster/up.sh, and a small range for the lab's own servers that Kubernetes objects point
# at (an Endpoints address may not be a loopback address).
POD_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
LAB_HOST_CIDR=10.250.0.0/24
ADAPTER_ADDRESS=10.250.0.2

lab_log() { printf '[lab] %s\n' "$*" >&2; }
lab_die() { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }

# The process that holds the namespace open: its pid is the namespace's handle.
NETNS_PID_FILE=$LAB_RUN/netns.pid

# ensure_iptables: kube-proxy programs the ClusterIPs with iptables, which a new machine lacks;
# as root it is installed from Debian's packages (the machine's own namespace is not touched:
# only the binary is installed, every rule is made inside the lab's namespace).
ensure_iptables() {
  command -v iptables >/dev/null && return 0
  [ "$(id -u)" = 0 ] || lab_die "iptables is not installed and kube-proxy needs it: run 'sudo apt-get install iptables' once"
  command -v apt-get >/dev/null || lab_die "iptables is not installed and there is no apt-get to install it"
  mkdir -p "$LAB_LOGS"
  local log=$LAB_LOGS/apt-iptables.log
  lab_log "installing Debian's iptables package (kube-proxy needs it; log $log)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends iptables >"$log" 2>&1; then
    lab_log "install failed; refreshing the package lists (apt-get update) and retrying"
    { apt-get -o DPkg::Lock::Timeout=600 update && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends iptables; } >>"$log" 2>&1 ||
      { tail -n 20 "$log" >&2; lab_die "apt-get install iptables failed"; }
  fi
  command -v iptables >/dev/null || lab_die "apt-get installed iptables but it is not on PATH ($PATH)"
}

# netns_holder_alive: the recorded holder runs and is the sleep we started.
netns_holder_alive() {
  local pid
  [ -s "$NETNS_PID_FILE" ] || return 1
  pid=$(cat "$NETNS_PID_FILE")
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q '^sleep infinity'
}

# As root the namespace is a plain network namespace; otherwise it is owned by a user namespace
# in which we are root (unprivileged user namespaces), which the same commands enter.
netns_unprivileged() { [ "$(id -u)" != 0 ]; }

# lab_can_isolate: prints nothing and succeeds when a closed namespace can be made here, else
# prints one line saying why not.
lab_can_isolate() {
  command -v unshare >/dev/null || { echo "unshare (util-linux) is not installed"; return 1; }
  command -v nsenter >/dev/null || { echo "nsenter (util-linux) is not installed"; return 1; }
  command -v ip >/dev/null || { echo "ip (iproute2) is not installed"; return 1; }
  if netns_unprivileged; then
    unshare --user --map-root-user --net true 2>/dev/null ||
      { echo "not root, and unprivileged user namespaces are disabled here"; return 1; }
  else
    unshare --net true 2>/dev/null || { echo "unshare --net is refused here (a container without CAP_SYS_ADMIN?)"; return 1; }
  fi
}

# lab_exec CMD...: runs CMD inside the lab's namespace (same files, same user).
lab_exec() {
  local pid
  pid=$(cat "$NETNS_PID_FILE")
  if netns_unprivileged; then
    nsenter --target "$pid" --user --net --preserve-credentials -- "$@"
  else
    nsenter --target "$pid" --net -- "$@"
  fi
}

# only_loopback: fails unless the current namespace's only interface is lo. Checked before
# anything starts in it, and again by the tests.
only_loopback() {
  local links
  links=$(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//')
  [ "$links" = "lo" ]
}

# netns_up: creates the namespace (or reuses a live one), brings lo up, makes the lab's ranges
# local, and checks that lo is all there is.
netns_up() {
  mkdir -p "$LAB_RUN" "$LAB_LOGS"
  if netns_holder_alive; then
    lab_exec bash -c "$(declare -f only_loopback); only_loopback" ||
      lab_die "the lab namespace (holder pid $(cat "$NETNS_PID_FILE")) has an interface other than lo"
    return 0
  fi
  local why
  why=$(lab_can_isolate) || lab_die "cannot create the lab's network namespace: $why"
  local flags=(--net)
  if netns_unprivileged; then flags=(--user --map-root-user --net); fi
  # setsid and closed fds: the holder must outlive this script and not keep a CI runner's pipes.
  setsid unshare "${flags[@]}" -- sleep infinity </dev/null >/dev/null 2>&1 &
  local holder=$! i
  for ((i = 0; i < 50; i++)); do
    # The holder is in its own namespace once readlink differs from ours.
    if [ "$(readlink "/proc/$holder/ns/net" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ] &&
      tr '\0' ' ' <"/proc/$holder/cmdline" 2>/dev/null | grep -q '^sleep infinity'; then
      break
    fi
    sleep 0.1
  done
  echo "$holder" >"$NETNS_PID_FILE"
  netns_holder_alive || lab_die "the namespace holder did not start"
  [ "$(readlink "/proc/$holder/ns/net")" != "$(readlink /proc/self/ns/net)" ] ||
    lab_die "the holder runs in the machine's own network namespace; refusing to go on"
  lab_exec bash -c "$(declare -f only_loopback)
    set -e
    only_loopback || { echo 'a new namespace with more than lo' >&2; exit 1; }
    ip link set lo up
    ip route add local $POD_CIDR dev lo
    ip route add local $SERVICE_CIDR dev lo
    ip route add local $LAB_HOST_CIDR dev lo
    only_loopback" || { kill "$holder" 2>/dev/null; rm -f "$NETNS_PID_FILE"; lab_die "could not set up the lab namespace"; }
  lab_log "network namespace up (holder pid $holder): only lo; local $POD_CIDR, $SERVICE_CIDR, $LAB_HOST_CIDR"
}

netns_down() {
  if netns_holder_alive; then
    kill "$(cat "$NETNS_PID_FILE")" 2>/dev/null || true
  fi
  rm -f "$NETNS_PID_FILE"
}
