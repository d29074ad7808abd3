#!/usr/bin/env bash
# Starts (or reuses) the lab: the local control plane of tests/cluster inside a network namespace
# that has only the loopback interface, plus kube-proxy, the pod responders, Traefik, Prometheus and
# the metrics adapter, all inside it. Builds what is missing first (outside the namespace: builds
# need the package registries, the namespace reaches nothing). State: target/lab/. Stop it with
# tests/lab/down.sh. Enter it with tests/lab/exec.sh (a shell) or tests/lab/exec.sh CMD...
set -euo pipefail
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

WAIT=${STEPWISE_LAB_TIMEOUT:-120}
# Fixed ports: the namespace is the lab's alone, so nothing else can hold them.
TRAEFIK_WEB=127.0.0.1:8000
TRAEFIK_ADMIN=127.0.0.1:9000
PROMETHEUS=127.0.0.1:9090
RESPONDER_STATUS=127.0.0.1:9100
KUBE_PROXY_METRICS=127.0.0.1:10249
KUBE_PROXY_HEALTH=127.0.0.1:10256
COMPONENTS=(kube-proxy lab-responder traefik prometheus lab-metrics-adapter)

# --- outside the namespace: build, then enter ------------------------------------------------
if [ "${1:-}" != --inside ]; then
  t0=$SECONDS
  why=$(lab_can_isolate) || lab_die "the lab cannot run here: $why"
  mkdir -p "$LAB_RUN" "$LAB_LOGS"
  ensure_iptables
  lab_log "step 1/6: the control plane binaries and kube-proxy (tests/cluster/build.sh)"
  BIN=$("$REPO_ROOT/tests/cluster/build.sh" | tail -n1)
  lab_log "step 2/6: Traefik (tests/lab/traefik.sh)"
  TRAEFIK_BIN=$("$LAB_SRC/traefik.sh")
  lab_log "step 3/6: Prometheus (tests/cluster/prometheus.sh)"
  PROMETHEUS_BIN=$("$REPO_ROOT/tests/cluster/prometheus.sh")
  lab_log "step 4/6: the routers' CRDs (tests/cluster/router-crds.sh --fetch-only)"
  "$REPO_ROOT/tests/cluster/router-crds.sh" --fetch-only
  lab_log "step 5/6: stepwise and the lab's programs (scripts/just build: cargo test --workspace --no-run)"
  (cd "$REPO_ROOT" && cargo test --workspace --no-run --quiet)
  lab_log "step 6/6: the namespace and everything in it"
  netns_up
  cat >"$LAB_RUN/binaries.env" <<EOF
BIN=$BIN
TRAEFIK_BIN=$TRAEFIK_BIN
PROMETHEUS_BIN=$PROMETHEUS_BIN
EOF
  lab_exec "$0" --inside
  lab_log "lab up in $((SECONDS - t0)) s"
  exit 0
fi

# --- inside the namespace --------------------------------------------------------------------
only_loopback || lab_die "refusing to start: this namespace has an interface other than lo"
# shellcheck disable=SC1091
. "$LAB_RUN/binaries.env"

# lab_start NAME BINARY ARGS...: detached, own session, fds above 2 closed, log in logs/NAME.log,
# "PID BINARY" in run/NAME.pid.
lab_start() {
  local name=$1 bin=$2 pidfile=$LAB_RUN/$1.pid i
  shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # $$, $0 and $1 are the inner shell's
  setsid bash -c '
    for f in /proc/$$/fd/*; do n=${f##*/}; if [ "$n" -gt 2 ]; then eval "exec $n>&-" 2>/dev/null || true; fi; done
    echo "$$ $1" >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' \
    "$pidfile" "$bin" "$@" </dev/null >>"$LAB_LOGS/$name.log" 2>&1 &
  for ((i = 0; i < 100; i++)); do
    [ -s "$pidfile" ] && break
    sleep 0.05
  done
  [ -s "$pidfile" ] || lab_die "$name did not start"
  lab_log "started $name (log $LAB_LOGS/$name.log)"
}
lab_alive() {
  local f=$LAB_RUN/$1.pid pid bin
  [ -s "$f" ] || return 1
  read -r pid bin <"$f" || true
  [ -r "/proc/$pid/cmdline" ] && [ "$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1)" = "$bin" ]
}
# wait_until WHAT CMD...: polls CMD; fails when a component died or after $WAIT s.
wait_until() {
  local what=$1 t=$SECONDS c
  shift
  until "$@" >/dev/null 2>&1; do
    for c in "${COMPONENTS[@]}"; do
      if [ -e "$LAB_RUN/$c.pid" ] && ! lab_alive "$c"; then
        tail -n 20 "$LAB_LOGS/$c.log" >&2 || true
        lab_die "$c exited while waiting for $what (log $LAB_LOGS/$c.log)"
      fi
    done
    [ $((SECONDS - t)) -lt "$WAIT" ] || lab_die "timed out after ${WAIT}s waiting for $what"
    sleep 0.25
  done
  lab_log "$what: ok ($((SECONDS - t)) s)"
}
get_ok() { curl --noproxy '*' -fsS -o /dev/null --max-time 2 "$1"; }

"$REPO_ROOT/tests/cluster/up.sh" >&2
# shellcheck disable=SC1091
. "$STEPWISE_CLUSTER_DIR/env"
export KUBECONFIG
API_SERVER=$("$KUBECTL" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
TOKEN=$(cut -d, -f1 "$STEPWISE_CLUSTER_DIR/pki/tokens.csv")
CA=$STEPWISE_CLUSTER_DIR/pki/ca.crt

"$REPO_ROOT/tests/cluster/router-crds.sh" >&2
"$KUBECTL" apply --server-side --force-conflicts --field-manager=stepwise-lab -f "$REPO_ROOT/crds/" >/dev/null
"$KUBECTL" apply --server-side --force-conflicts --field-manager=stepwise-lab -f "$LAB_SRC/manifests/gateway.yaml" >/dev/null

# kube-proxy: ClusterIPs through iptables. The namespace has no conntrack table to size and no
# node address; it proxies for every Service whatever node it says it is. No --cluster-cidr: with
# it, traffic from outside the pod CIDR (the API server's, whose source is the ClusterIP itself) is
# masqueraded to lo's 127.0.0.1 and dropped on its way to a non-loopback address. Everything here
# is local, nothing needs masquerading. It waits 30 s for kwok's node to get an address (kwok here
# gives none, so that nothing ever dials a fake node) before it programs anything.
if ! lab_alive kube-proxy; then
  lab_start kube-proxy "$BIN/kube-proxy" \
    --kubeconfig="$KUBECONFIG" \
    --hostname-override=kwok-node-0 \
    --proxy-mode=iptables \
    --conntrack-max-per-core=0 \
    --iptables-localhost-nodeports=false \
    --metrics-bind-address="$KUBE_PROXY_METRICS" \
    --healthz-bind-address="$KUBE_PROXY_HEALTH"
fi

if ! lab_alive lab-responder; then
  RUST_LOG=${RUST_LOG:-info} lab_start lab-responder "$REPO_ROOT/target/debug/lab-responder" \
    --kubeconfig="$KUBECONFIG" --status-address="$RESPONDER_STATUS"
fi

# Traefik reads its static configuration from one source only: this file (it holds the token).
(
  umask 077
  cat >"$LAB_STATE/traefik.yaml" <<EOF
entryPoints:
  web:
    address: "$TRAEFIK_WEB"
  traefik:
    address: "$TRAEFIK_ADMIN"
api:
  insecure: true
  # The module's web UI assets are not built (they come from npm); the API alone serves the tests.
  dashboard: false
ping:
  entryPoint: traefik
metrics:
  prometheus:
    entryPoint: traefik
    addServicesLabels: true
    addRoutersLabels: true
log:
  level: INFO
providers:
  kubernetesCRD:
    endpoint: "$API_SERVER"
    token: "$TOKEN"
    certAuthFilePath: "$CA"
  kubernetesIngress:
    endpoint: "$API_SERVER"
    token: "$TOKEN"
    certAuthFilePath: "$CA"
  kubernetesGateway:
    endpoint: "$API_SERVER"
    token: "$TOKEN"
    certAuthFilePath: "$CA"
EOF
)
if ! lab_alive traefik; then
  lab_start traefik "$TRAEFIK_BIN" --configFile="$LAB_STATE/traefik.yaml"
fi

sed -e "s|@RESPONDERS@|$RESPONDER_STATUS|g" -e "s|@TRAEFIK_ADMIN@|$TRAEFIK_ADMIN|g" \
  "$LAB_SRC/prometheus.yml" >"$LAB_STATE/prometheus.yml"
if ! lab_alive prometheus; then
  mkdir -p "$LAB_STATE/prometheus-data"
  lab_start prometheus "$PROMETHEUS_BIN" \
    --config.file="$LAB_STATE/prometheus.yml" \
    --storage.tsdb.path="$LAB_STATE/prometheus-data" \
    --storage.tsdb.retention.time=2h \
    --web.listen-address="$PROMETHEUS"
fi

# The metrics adapter serves TLS (the API server's aggregator insists on https; it is told not
# to verify the certificate).
if [ ! -s "$LAB_STATE/adapter.crt" ]; then
  (
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=lab-metrics-adapter" \
      -addext "subjectAltName=IP:$ADAPTER_ADDRESS,DNS:lab-metrics-adapter.kube-system.svc" \
      -keyout "$LAB_STATE/adapter.key" -out "$LAB_STATE/adapter.crt" >/dev/null 2>&1
  )
fi
if ! lab_alive lab-metrics-adapter; then
  RUST_LOG=${RUST_LOG:-info} lab_start lab-metrics-adapter "$REPO_ROOT/target/debug/lab-metrics-adapter" \
    --listen="$ADAPTER_ADDRESS:6443" --tls-cert="$LAB_STATE/adapter.crt" --tls-key="$LAB_STATE/adapter.key" \
    --rules="$LAB_SRC/adapter-rules.yaml" --prometheus="http://$PROMETHEUS" --kubeconfig="$KUBECONFIG"
fi
"$KUBECTL" apply --server-side --force-conflicts --field-manager=stepwise-lab -f "$LAB_SRC/manifests/metrics-adapter.yaml" >/dev/null

wait_until "kube-proxy /healthz" get_ok "http://$KUBE_PROXY_HEALTH/healthz"
wait_until "responders /healthz" get_ok "http://$RESPONDER_STATUS/healthz"
wait_until "Traefik /ping" get_ok "http://$TRAEFIK_ADMIN/ping"
wait_until "Prometheus /-/ready" get_ok "http://$PROMETHEUS/-/ready"
wait_until "the external metrics API through the API server" "$KUBECTL" get --raw /apis/external.metrics.k8s.io/v1beta1
wait_until "the custom metrics API through the API server" "$KUBECTL" get --raw /apis/custom.metrics.k8s.io/v1beta2

cat >"$LAB_ENV" <<EOF
# The lab's environment: tests/lab/exec.sh sources it inside the lab's namespace.
export STEPWISE_CLUSTER_DIR=$STEPWISE_CLUSTER_DIR
export KUBECONFIG=$KUBECONFIG
export STEPWISE_KUBECONFIG=$KUBECONFIG
export PATH=$STEPWISE_CLUSTER_DIR/bin:$REPO_ROOT/target/debug:\$PATH
export LAB_TRAEFIK_URL=http://$TRAEFIK_WEB
export LAB_TRAEFIK_ADMIN_URL=http://$TRAEFIK_ADMIN
export LAB_PROMETHEUS_URL=http://$PROMETHEUS
export LAB_RESPONDER_URL=http://$RESPONDER_STATUS
export LAB_GATEWAY=lab-gateway/lab
EOF
cat >&2 <<EOF
[lab] up: everything below runs inside a network namespace with only lo
  traefik  http://$TRAEFIK_WEB (dashboard and metrics http://$TRAEFIK_ADMIN)
  prometheus http://$PROMETHEUS   responders http://$RESPONDER_STATUS/pods
  enter: tests/lab/exec.sh            (a shell with kubectl and kubectl stepwise)
  run:   tests/lab/exec.sh CMD...     stop: tests/lab/down.sh     logs: $LAB_LOGS/
EOF
