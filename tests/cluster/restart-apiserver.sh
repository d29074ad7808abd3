#!/usr/bin/env bash
# Restarts the kube-apiserver of the running local control plane, as an upgrade or a crash of the
# control plane would: TERM, KILL after STEPWISE_APISERVER_STOP_GRACE seconds (5 by default),
# DOWN_SECONDS with no API server at all, then the same binary with the same flags and port on the
# same etcd (so every object survives). Returns once /readyz answers. The other components are
# left alone: they must reconnect by themselves.
#
# Usage: tests/cluster/restart-apiserver.sh [DOWN_SECONDS]   (default 0; fractions allowed)
# Stdout: "stopping <unix time>" when TERM is sent, "stopped <unix time>" once the old process is
# gone and "ready <unix time>" once the new one is ready, for a test to time its outage by; the
# progress goes to stderr.
#
# The grace is short on purpose: on TERM the API server stops listening at once, but then waits
# for its open watches to end, up to its request timeout (60 s), before it exits; a kubelet would
# kill it after the pod's grace period too.
set -euo pipefail
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

down=${1:-0}
grace=${STEPWISE_APISERVER_STOP_GRACE:-5}
[[ $down =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "usage: $0 [DOWN_SECONDS]"
[[ $grace =~ ^[0-9]+$ ]] || die "STEPWISE_APISERVER_STOP_GRACE=$grace is not a whole number of seconds"

# Held throughout: an up.sh meanwhile would find no API server and tear the whole cluster down.
take_lock
alive etcd && alive kube-apiserver || die "no running cluster at $STATE: start it with tests/cluster/up.sh"
[ -s "$RUN/bin-dir" ] && [ -s "$RUN/ports.env" ] || die "$RUN lacks bin-dir or ports.env: restart the cluster with up.sh"
BIN=$(cat "$RUN/bin-dir")
# shellcheck disable=SC1091
. "$RUN/ports.env"

echo "stopping $(date +%s.%N)"
stop_component kube-apiserver "$grace"
echo "stopped $(date +%s.%N)"
if [ "$down" != 0 ]; then
  log "kube-apiserver down for ${down}s"
  sleep "$down"
fi
printf -- '----- restarted by restart-apiserver.sh at %s -----\n' "$(date -u +%FT%TZ)" >>"$LOGS/kube-apiserver.log"
start_apiserver
wait_for "kube-apiserver /readyz" http_ok "https://127.0.0.1:$API_PORT/readyz" "$PKI/ca.crt"
echo "ready $(date +%s.%N)"
