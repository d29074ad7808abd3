#!/usr/bin/env bash
# Installs the real CRDs of the traffic routers stepwise drives (Istio's networking.istio.io,
# Gateway API's gateway.networking.k8s.io, standard channel, and Traefik's traefik.io) into the
# local control plane. They
# are taken from those projects' own Go modules at pinned versions, so the e2e tests run against
# the schemas users have, and cached by version under ~/.cache/stepwise/: with a warm cache this
# takes a few seconds (the apply). With --fetch-only it only fills the cache (the lab fetches outside
# its closed namespace, then applies inside it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# The module versions whose CRDs are installed. Bump them here; the cache key follows.
ISTIO_API_VERSION=v1.32.0
GATEWAY_API_VERSION=v1.6.3
TRAEFIK_VERSION=v3.7.13

CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
OUT=$CACHE_ROOT/router-crds-istio-$ISTIO_API_VERSION-gateway-api-$GATEWAY_API_VERSION-traefik-$TRAEFIK_VERSION
STATE=${STEPWISE_CLUSTER_DIR:-$repo/target/cluster}
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=
log() { printf '[router-crds] %s\n' "$*" >&2; }
# shellcheck source=go-module.sh
. "$here/go-module.sh"

# Several test binaries may call this at once: one downloads and applies, the others wait.
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.router-crds.lock"
flock -w 1800 8 || { log "timed out waiting for $CACHE_ROOT/.router-crds.lock"; exit 1; }


if [ ! -s "$OUT/istio.yaml" ]; then
  dir=$(go_module_dir "istio.io/api@$ISTIO_API_VERSION")
  mkdir -p "$OUT"
  cp "$dir/kubernetes/customresourcedefinitions.gen.yaml" "$OUT/istio.yaml.tmp"
  mv "$OUT/istio.yaml.tmp" "$OUT/istio.yaml"
fi
if [ ! -s "$OUT/gateway-api.yaml" ]; then
  dir=$(go_module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
  mkdir -p "$OUT"
  for f in "$dir"/config/crd/standard/*.yaml; do cat "$f"; printf '\n---\n'; done >"$OUT/gateway-api.yaml.tmp"
  mv "$OUT/gateway-api.yaml.tmp" "$OUT/gateway-api.yaml"
fi

if [ ! -s "$OUT/traefik.yaml" ]; then
  dir=$(go_module_dir "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")
  mkdir -p "$OUT"
  cp "$dir/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" "$OUT/traefik.yaml.tmp"
  mv "$OUT/traefik.yaml.tmp" "$OUT/traefik.yaml"
fi

if [ "${1:-}" = --fetch-only ]; then
  log "CRDs cached in $OUT"
  exit 0
fi
[ -s "$STATE/env" ] || { log "no $STATE/env: start the local control plane first (tests/cluster/up.sh)"; exit 1; }
# shellcheck disable=SC1091
. "$STATE/env"
export KUBECONFIG
# Server-side: the Istio CRDs are too large for the last-applied annotation of a client-side apply.
for f in istio gateway-api traefik; do
  log "applying $f CRDs ($OUT/$f.yaml)"
  "$KUBECTL" apply --server-side --force-conflicts --field-manager=stepwise-router-crds -f "$OUT/$f.yaml" >/dev/null
done
"$KUBECTL" wait --for condition=established --timeout=60s \
  crd/virtualservices.networking.istio.io crd/destinationrules.networking.istio.io \
  crd/httproutes.gateway.networking.k8s.io crd/traefikservices.traefik.io >/dev/null
log "Istio $ISTIO_API_VERSION, Gateway API $GATEWAY_API_VERSION and Traefik $TRAEFIK_VERSION CRDs are served"
