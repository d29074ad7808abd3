# Shared helpers for up.sh, down.sh, smoke.sh and restart-apiserver.sh. Sourced, never executed.
# shellcheck shell=bash

CLUSTER_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLUSTER_SRC/../.." && pwd)
# Everything a running cluster owns lives here (git-ignored: target/ is).
STATE=${STEPWISE_CLUSTER_DIR:-$REPO_ROOT/target/cluster}
RUN=$STATE/run        # <component>.pid ("PID BINARY"), ports.env, etcd-data-dir, bin-dir
PKI=$STATE/pki        # CA, serving cert, service-account keys, tokens.csv (the admin token)
LOGS=$STATE/logs      # <component>.log
KUBECONFIG_FILE=$STATE/kubeconfig
ENV_FILE=$STATE/env

WAIT=${STEPWISE_CLUSTER_TIMEOUT:-180}   # seconds per readiness phase (wait_for)

# Start order; down.sh stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# Serialise up.sh / down.sh (several test binaries may call up.sh at once). fd 9 is closed for
# every component we start, so the lock never outlives the script holding it.
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  if ! flock -w 3600 9; then die "timed out waiting for the lock $STATE/.lock"; fi
}

# pid_of NAME -> prints the recorded pid (empty if none).
pid_of() {
  local f=$RUN/$1.pid
  [ -s "$f" ] || return 0
  awk 'NR==1{print $1}' "$f"
}

# alive NAME: the recorded pid runs the recorded binary (guards against pid reuse and zombies).
alive() {
  local f=$RUN/$1.pid pid bin argv0
  [ -s "$f" ] || return 1
  read -r pid bin <"$f" || true
  [ -n "${pid:-}" ] && [ -n "${bin:-}" ] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1) || return 1
  [ "$argv0" = "$bin" ]
}

# http_ok URL [CAFILE|insecure] [URL [CAFILE|insecure]]...: every URL answers 200 within 2 s.
# One python process for all of them; never goes through a proxy. Use "-" as a placeholder
# for plain-http URLs that are followed by more pairs.
http_ok() {
  python3 - "$@" <<'PY' 2>/dev/null
import ssl, sys, urllib.request
args = sys.argv[1:]
for i in range(0, len(args), 2):
    url = args[i]
    mode = args[i + 1] if i + 1 < len(args) else "-"
    handlers = [urllib.request.ProxyHandler({})]
    if url.startswith("https:"):
        if mode == "insecure":
            ctx = ssl._create_unverified_context()
        else:
            ctx = ssl.create_default_context(cafile=mode)
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=2) as r:
            if r.status != 200:
                sys.exit(1)
    except Exception:
        sys.exit(1)
PY
}

# Free loopback TCP ports, all distinct (sockets held open together while picking).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# --- process management --------------------------------------------------------------------
# start NAME BINARY ARGS...: detached (own session, stdin closed, lock fd closed), output to
# logs/NAME.log; records "PID BINARY" in run/NAME.pid. Extra env via START_ENV=(K=V ...).
START_ENV=()
start() {
  local name=$1 bin=$2 pidfile=$RUN/$1.pid i
  shift 2
  rm -f "$pidfile"
  (
    exec 9>&-
    cd "$STATE"
    # shellcheck disable=SC2016 # $$, $0 and $1 are the inner shell's
    # The inner shell closes every inherited fd above 2 (a CI runner waiting for its pipes to
    # close must not wait for the cluster), writes its pid, then becomes the component.
    exec env ${START_ENV[@]+"${START_ENV[@]}"} setsid bash -c '
      for f in /proc/$$/fd/*; do n=${f##*/}; if [ "$n" -gt 2 ]; then eval "exec $n>&-" 2>/dev/null || true; fi; done
      echo "$$ $1" >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' \
      "$pidfile" "$bin" "$@" </dev/null >>"$LOGS/$name.log" 2>&1
  ) &
  for ((i = 0; i < 100; i++)); do
    [ -s "$pidfile" ] && break
    sleep 0.05
  done
  [ -s "$pidfile" ] || die "$name did not start"
  log "started $name (pid $(pid_of "$name"), log $LOGS/$name.log)"
}

# wait_for DESCRIPTION CMD...: poll until CMD succeeds; fail early if a component died.
wait_for() {
  local what=$1 deadline c t=$SECONDS
  shift
  deadline=$(($(date +%s) + WAIT))
  until "$@" >/dev/null 2>&1; do
    for c in "${COMPONENTS[@]}"; do
      if [ -e "$RUN/$c.pid" ] && ! alive "$c"; then
        die "$c exited while waiting for $what (see $LOGS/$c.log)"
      fi
    done
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${WAIT}s waiting for $what"
    sleep 0.25
  done
  log "$what: ok ($((SECONDS - t))s)"
}

# start_apiserver: needs BIN, ETCD_PORT and API_PORT. up.sh and restart-apiserver.sh both start it
# here, so that a restarted API server runs with exactly the flags of the first start.
start_apiserver() {
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --cert-dir="$STATE/apiserver" \
    --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true --profiling=false \
    --max-requests-inflight=3000 --max-mutating-requests-inflight=1000
}

# Tail of every component log (for failure reports).
tail_logs() {
  local n=${1:-25} c
  for c in "${COMPONENTS[@]}"; do
    [ -s "$LOGS/$c.log" ] || continue
    printf -- '----- last %s lines of %s -----\n' "$n" "$LOGS/$c.log" >&2
    tail -n "$n" "$LOGS/$c.log" >&2
  done
}

# stop_component NAME [GRACE_SECONDS]: TERM the recorded pid, KILL after the grace period.
stop_component() {
  local name=$1 grace=${2:-15} pid i
  pid=$(pid_of "$name")
  if [ -n "$pid" ] && alive "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true # a stopped process would not see TERM
    for ((i = 0; i < grace * 10; i++)); do
      alive "$name" || break
      sleep 0.1
    done
    if alive "$name"; then
      log "$name (pid $pid) ignored TERM for ${grace}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$name" || break; sleep 0.1; done
    fi
  fi
  rm -f "$RUN/$name.pid"
}

# Stop everything up.sh recorded (reverse start order) and delete the cluster state.
# Logs (and target/cluster/bin) are kept for post-mortems.
cluster_down() {
  local i data
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_component "${COMPONENTS[$i]}"
  done
  if [ -s "$RUN/etcd-data-dir" ]; then
    data=$(cat "$RUN/etcd-data-dir")
    case "$data" in
      /dev/shm/stepwise-etcd.*|"$STATE"/etcd-data) rm -rf -- "$data" ;;
      *) log "not removing unexpected etcd data dir '$data'" ;;
    esac
  fi
  rm -rf -- "$RUN" "$PKI" "$STATE/kwok" "$STATE/apiserver" "$STATE/etcd-data" \
    "$STATE/kube-scheduler.yaml" "$KUBECONFIG_FILE" "$ENV_FILE"
}
