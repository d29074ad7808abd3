#!/usr/bin/env bash
# Starts (or reuses) the local control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok with 3 fake nodes, everything on free 127.0.0.1 ports.
# State: target/cluster/ (kubeconfig, env, logs/, run/, pki/). Stop it with tests/cluster/down.sh.
set -euo pipefail
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

NODES=${STEPWISE_NODES:-3}
NODE_PODS=${STEPWISE_NODE_PODS:-1000}

for tool in python3 openssl flock setsid base64; do
  command -v "$tool" >/dev/null || die "'$tool' is required but not installed"
done

print_usage() {
  local kubectl=$1 api=$2
  cat <<EOF
cluster: up at $api (kube-apiserver $(cat "$RUN/server-version" 2>/dev/null || echo '?'))
  export KUBECONFIG=$KUBECONFIG_FILE
  export PATH=$STATE/bin:\$PATH      # kubectl -> $kubectl
  env file: $ENV_FILE   ports: $RUN/ports.env   logs: $LOGS/
  stop: $CLUSTER_SRC/down.sh
EOF
}

# --- reuse a healthy cluster --------------------------------------------------------------
# The cache dir build.sh will use (same formula); a cluster running other versions is restarted.
expected_bin_dir() {
  (
    # shellcheck source=versions.env
    . "$CLUSTER_SRC/versions.env"
    echo "${OUT:-${STEPWISE_CACHE:-$HOME/.cache/stepwise}/k8s-v$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION}"
  )
}
healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  [ "$(cat "$RUN/bin-dir" 2>/dev/null)" = "$(expected_bin_dir)" ] || return 1
  [ -s "$RUN/ports.env" ] && [ -s "$KUBECONFIG_FILE" ] && [ -s "$ENV_FILE" ] || return 1
  # shellcheck disable=SC1091
  (
    . "$RUN/ports.env"
    http_ok "https://127.0.0.1:$API_PORT/readyz" "$PKI/ca.crt" \
      "https://127.0.0.1:$KCM_PORT/healthz" insecure \
      "https://127.0.0.1:$SCHED_PORT/healthz" insecure \
      "http://127.0.0.1:$KWOK_PORT/healthz" -
  )
}

# --- kwok ----------------------------------------------------------------------------------
# kwok reads its stages only when it starts: the upstream ones from the binary cache plus ours
# (kwok-test-stages.yaml). The hash of ours is recorded so that a reused cluster whose kwok runs
# older stages gets kwok restarted (and only kwok).
KWOK_TEST_STAGES=$CLUSTER_SRC/kwok-test-stages.yaml
# A cluster may add stages of its own (the lab: pods that take their time to terminate).
KWOK_EXTRA_STAGES=${STEPWISE_KWOK_EXTRA_STAGES:-}
kwok_stages_hash() { cat "$KWOK_TEST_STAGES" ${KWOK_EXTRA_STAGES:+"$KWOK_EXTRA_STAGES"} | sha256sum | cut -d' ' -f1; }
# start_kwok: needs BIN and KWOK_PORT.
start_kwok() {
  # KWOK_WORKDIR keeps kwok away from ~/.kwok; no --node-ip so nothing ever dials a fake node.
  START_ENV=("KWOK_WORKDIR=$STATE/kwok")
  start kwok "$BIN/kwok" \
    --kubeconfig="$KUBECONFIG_FILE" \
    --manage-all-nodes=true \
    --node-lease-duration-seconds=40 \
    --cidr=10.244.0.0/16 \
    --server-address="127.0.0.1:$KWOK_PORT" \
    --config="$BIN/kwok-stages.yaml" \
    --config="$KWOK_TEST_STAGES" \
    ${KWOK_EXTRA_STAGES:+--config="$KWOK_EXTRA_STAGES"}
  START_ENV=()
  kwok_stages_hash >"$RUN/kwok-test-stages.sha256"
}

take_lock
mkdir -p "$STATE" "$LOGS"
chmod 700 "$STATE"

if healthy; then
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  if [ "$(cat "$RUN/kwok-test-stages.sha256" 2>/dev/null)" != "$(kwok_stages_hash)" ]; then
    log "kwok runs other stages than $KWOK_TEST_STAGES; restarting kwok"
    BIN=$(cat "$RUN/bin-dir")
    # shellcheck disable=SC1091
    . "$RUN/ports.env"
    stop_component kwok
    start_kwok
    wait_for "kwok /healthz" http_ok "http://127.0.0.1:$KWOK_PORT/healthz"
  fi
  log "reusing the running cluster"
  print_usage "$KUBECTL" "$API_SERVER"
  exit 0
fi

if [ -d "$RUN" ] || [ -d "$PKI" ]; then
  log "the recorded cluster is stopped, half-started or not answering; tearing it down and starting afresh"
  for c in "${COMPONENTS[@]}"; do
    if [ -s "$RUN/$c.pid" ] && ! alive "$c" && [ -s "$LOGS/$c.log" ]; then
      log "$c is not running; last lines of its log:"
      tail -n 15 "$LOGS/$c.log" >&2 || true
    fi
  done
  cluster_down
fi

# --- binaries ------------------------------------------------------------------------------
BIN=$("$CLUSTER_SRC/build.sh" | tail -n1)
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl kwok-stages.yaml; do
  [ -e "$BIN/$b" ] || die "build.sh did not produce $BIN/$b"
done
KUBECTL=$(readlink -f "$BIN/kubectl")

t0=$(date +%s.%N)
exec 8>&2 # the real stderr: a signal may arrive while stderr is redirected (wait_for's probes)
on_exit() {
  local rc=$?
  exec 2>&8
  if [ "$rc" -ne 0 ] && [ "$started" = 1 ]; then
    log "start failed; tearing down what was started (logs kept in $LOGS)"
    tail_logs 30
    cluster_down
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
started=1 # from here on, a failure tears down whatever exists (cluster_down copes with partial state)

mkdir -p "$RUN" "$PKI" "$STATE/kwok" "$STATE/apiserver" "$STATE/bin"
chmod 700 "$PKI"
# Keep the previous run's logs for one more start.
mkdir -p "$LOGS/previous"
for c in "${COMPONENTS[@]}"; do
  if [ -f "$LOGS/$c.log" ]; then mv -f "$LOGS/$c.log" "$LOGS/previous/$c.log"; fi
done
echo "$BIN" >"$RUN/bin-dir"

# --- ports ---------------------------------------------------------------------------------
# A port is free when picked and taken only when its component binds it: clusters starting side by
# side (`just test` gives each suite its own) pick and bind one at a time, under a lock shared by
# every state directory.
mkdir -p "${STEPWISE_CACHE:-$HOME/.cache/stepwise}"
exec 7>"${STEPWISE_CACHE:-$HOME/.cache/stepwise}/.cluster-ports.lock"
flock -w 600 7 || die "timed out waiting for the lock of the port picking"
read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT <<<"$(free_ports 6)"
cat >"$RUN/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
KWOK_PORT=$KWOK_PORT
EOF
API_SERVER=https://127.0.0.1:$API_PORT

# --- PKI and credentials (never leave target/) -----------------------------------------------
(
  umask 077
  cd "$PKI"
  ossl() { local out; out=$(openssl "$@" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }; }
  ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=stepwise-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout ca.key -out ca.crt
  ossl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr
  cat >apiserver.ext <<'X'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
X
  ossl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile apiserver.ext -out apiserver.crt
  ossl genrsa -out sa.key 2048
  ossl rsa -in sa.key -pubout -out sa.pub
  token=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  printf '%s,admin,admin,"system:masters"\n' "$token" >tokens.csv
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: stepwise-local
  cluster:
    server: $API_SERVER
    certificate-authority-data: $(base64 -w0 <ca.crt)
users:
- name: admin
  user:
    token: $token
contexts:
- name: stepwise-local
  context:
    cluster: stepwise-local
    user: admin
    namespace: default
current-context: stepwise-local
EOF
)
chmod 600 "$KUBECONFIG_FILE"
K=("$KUBECTL" --kubeconfig "$KUBECONFIG_FILE")

# --- etcd ----------------------------------------------------------------------------------
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  ETCD_DATA=$(mktemp -d /dev/shm/stepwise-etcd.XXXXXX)
else
  ETCD_DATA=$STATE/etcd-data
  mkdir -p "$ETCD_DATA"
fi
chmod 700 "$ETCD_DATA"
echo "$ETCD_DATA" >"$RUN/etcd-data-dir"
start etcd "$BIN/etcd" \
  --name=node0 --data-dir="$ETCD_DATA" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="node0=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true --auto-compaction-retention=1 --quota-backend-bytes=2147483648 --log-level=warn
wait_for "etcd /health" http_ok "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver ------------------------------------------------------------------------
start_apiserver
wait_for "kube-apiserver /readyz" http_ok "$API_SERVER/readyz" "$PKI/ca.crt"
"${K[@]}" version -o json 2>/dev/null | python3 -c 'import json,sys;print(json.load(sys.stdin)["serverVersion"]["gitVersion"])' \
  >"$RUN/server-version" 2>/dev/null || true

# --- kube-controller-manager and kube-scheduler --------------------------------------------
# No --authentication/authorization-kubeconfig: their HTTPS ports then serve only the always-allowed
# /healthz, /readyz and /livez (with them they poll for the aggregation-layer CA we don't configure).
# --node-monitor-grace-period: after an API server restart (restart-apiserver.sh) the KCM's lease
# informer can lag ~30 s behind kwok's renewals, so with the default 50 s it takes the fake nodes for
# dead and marks their pods NotReady, which kwok, unlike a kubelet, never reports Ready again.
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$KUBECONFIG_FILE" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
  --leader-elect=false --controllers='*' \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --kube-api-qps=5000 --kube-api-burst=10000 --profiling=false \
  --node-monitor-grace-period=3m

cat >"$STATE/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $KUBECONFIG_FILE
  qps: 5000
  burst: 10000
leaderElection:
  leaderElect: false
EOF
start kube-scheduler "$BIN/kube-scheduler" \
  --config="$STATE/kube-scheduler.yaml" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --profiling=false

start_kwok

wait_for "kube-controller-manager /healthz" http_ok "https://127.0.0.1:$KCM_PORT/healthz" insecure
wait_for "kube-scheduler /healthz" http_ok "https://127.0.0.1:$SCHED_PORT/healthz" insecure
wait_for "kwok /healthz" http_ok "http://127.0.0.1:$KWOK_PORT/healthz"
exec 7>&- # every port is bound

# --- fake nodes ----------------------------------------------------------------------------
nodes_yaml() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "1000", memory: 1Ti, pods: "$NODE_PODS"}
  capacity: {cpu: "1000", memory: 1Ti, pods: "$NODE_PODS"}
EOF
  done
}
nodes_yaml | "${K[@]}" apply -f - >/dev/null

nodes_ready() {
  local out
  out=$("${K[@]}" get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status};{.spec.taints}{"\n"}{end}') || return 1
  [ "$(grep -c '=True;$' <<<"$out")" -eq "$NODES" ]
}
wait_for "$NODES nodes Ready without taints" nodes_ready
wait_for "ServiceAccount default/default" "${K[@]}" -n default get serviceaccount default

# --- outputs -------------------------------------------------------------------------------
ln -sfn "$KUBECTL" "$STATE/bin/kubectl"
{
  printf 'KUBECONFIG=%q\n' "$KUBECONFIG_FILE"
  printf 'KUBECTL=%q\n' "$KUBECTL"
  printf 'API_SERVER=%q\n' "$API_SERVER"
} >"$ENV_FILE"
started=0
log "cluster ready in $(python3 -c "import sys;print(round(float(sys.argv[2])-float(sys.argv[1]),1))" "$t0" "$(date +%s.%N)")s"
print_usage "$KUBECTL" "$API_SERVER"
