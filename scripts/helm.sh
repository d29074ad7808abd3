#!/usr/bin/env bash
# Builds Helm from its Go module (helm.sh/helm/v3/cmd/helm) at a pinned version into
# ~/.cache/stepwise/helm-<version>/, once; later runs return at once. Prints the binary's path on
# stdout; progress goes to stderr. Used by tests/helm/test.sh and `just helm-test`; users may run
# it too (`$(scripts/helm.sh) version`).
#
# Like tests/cluster/build.sh, it uses Go's default module and build caches (`go env GOMODCACHE`,
# `go env GOCACHE`), so modules Helm shares with Kubernetes are downloaded and compiled once.
set -euo pipefail

# The Helm version. Bump it here; the cache key follows.
HELM_VERSION=v3.22.0

CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
OUT=$CACHE_ROOT/helm-$HELM_VERSION
log() { printf '[helm] %s\n' "$*" >&2; }
# shellcheck source=../tests/cluster/go-module.sh
. "$(dirname "$0")/../tests/cluster/go-module.sh"

if [ -x "$OUT/helm" ]; then
  echo "$OUT/helm"
  exit 0
fi

command -v go >/dev/null || { log "ERROR: go not found (Go 1.26 builds Helm from its module)"; exit 1; }

# Several callers may build at once: one builds, the others wait and reuse it.
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.helm.lock"
flock -w 1800 8 || { log "ERROR: timed out waiting for $CACHE_ROOT/.helm.lock"; exit 1; }
if [ -x "$OUT/helm" ]; then
  echo "$OUT/helm"
  exit 0
fi

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
log "building helm $HELM_VERSION (first time, a few minutes) into $OUT"
started=$SECONDS
tmp=$(mktemp -d "$CACHE_ROOT/.helm-build.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
# Stamped the way Helm's Makefile does: the version, and the Kubernetes version that `helm lint`
# and `helm template` assume without a cluster (the client-go minor Helm is built with; unstamped
# it would be 1.20, below the chart's kubeVersion).
dir=$(go_module_dir "helm.sh/helm/v3@$HELM_VERSION")
k8s_minor=$(sed -n 's|^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p' "$dir/go.mod" | head -n1)
[ -n "$k8s_minor" ] || { log "ERROR: no k8s.io/client-go version in $dir/go.mod"; exit 1; }
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done
GOBIN="$tmp" go_install_progress "helm $HELM_VERSION" "helm.sh/helm/v3@$HELM_VERSION" ./cmd/helm -trimpath -ldflags="$ld" ||
  { log "ERROR: go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed after $((SECONDS - started)) s"; exit 1; }
"$tmp/helm" version --short >/dev/null
mkdir -p "$OUT"
mv "$tmp/helm" "$OUT/helm"
log "built helm $HELM_VERSION in $((SECONDS - started)) s: $OUT/helm"
echo "$OUT/helm"
