#!/usr/bin/env bash
# Installs prometheus-operator's ServiceMonitor CRD (monitoring.coreos.com/v1) into the local
# control plane, so that the chart's optional ServiceMonitor is checked by the API server. It is
# taken from the prometheus-operator Go module at a pinned version and cached under
# ~/.cache/stepwise/ like the routers' CRDs (tests/cluster/router-crds.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
OUT=$CACHE_ROOT/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION
STATE=${STEPWISE_CLUSTER_DIR:-$repo/target/cluster}
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=
log() { printf '[servicemonitor-crd] %s\n' "$*" >&2; }
# shellcheck source=../cluster/go-module.sh
. "$repo/tests/cluster/go-module.sh"

mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.prometheus-operator-crds.lock"
flock -w 600 8 || { log "timed out waiting for the lock"; exit 1; }
if [ ! -s "$OUT/servicemonitors.yaml" ]; then
  mod=github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION
  dir=$(go_module_dir "$mod")
  mkdir -p "$OUT"
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$OUT/servicemonitors.yaml.tmp"
  mv "$OUT/servicemonitors.yaml.tmp" "$OUT/servicemonitors.yaml"
fi
KUBECTL=$(sed -n 's/^KUBECTL=//p' "$STATE/env")
KUBECONFIG=$(sed -n 's/^KUBECONFIG=//p' "$STATE/env")
export KUBECONFIG
"$KUBECTL" apply --server-side --force-conflicts -f "$OUT/servicemonitors.yaml" >/dev/null
# Polled rather than `kubectl wait`: a CRD just created has no conditions yet, and kubectl 1.34's
# wait fails on that ("accessor error: <nil>") instead of waiting.
crd=crd/servicemonitors.monitoring.coreos.com
for _ in $(seq 1 120); do
  established=$("$KUBECTL" get "$crd" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')
  [ "$established" = True ] && break
  sleep 0.5
done
[ "$established" = True ] || { log "$crd is not Established after 60 s"; exit 1; }
echo "$OUT/servicemonitors.yaml"
