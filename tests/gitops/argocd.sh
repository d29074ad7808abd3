#!/usr/bin/env bash
# Builds tests/gitops/argocd (Argo CD's Lua runner: gopher-lua and the JSON libraries Argo CD
# uses) into ~/.cache/stepwise/, once, keyed by its sources, and puts beside it the built-in
# resource customizations of Argo CD's own Go module (its health check and actions for
# argoproj.io Rollouts) as argo-cd-resource-customizations/. Later runs return at once.
# Prints the binary's path on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The newest Argo CD whose go.mod the machine's Go (1.26) accepts; its Rollout and AnalysisRun
# scripts are those of 3.6 too.
ARGO_CD_VERSION=v3.5.8
CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
sources=$(cat "$here"/argocd/*.go "$here/argocd/go.sum" | sha256sum | cut -c1-12)
OUT=$CACHE_ROOT/argocd-lua-$ARGO_CD_VERSION-$sources
if [ -x "$OUT/argocd-lua" ] && [ -d "$OUT/argo-cd-resource-customizations" ]; then
  echo "$OUT/argocd-lua"
  exit 0
fi
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.argocd-lua.lock"
flock -w 900 8 || { echo "[argocd] timed out waiting for $CACHE_ROOT/.argocd-lua.lock" >&2; exit 1; }
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod
if [ ! -x "$OUT/argocd-lua" ]; then
  echo "[argocd] building tests/gitops/argocd into $OUT" >&2
  mkdir -p "$OUT"
  (cd "$here/argocd" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$OUT/argocd-lua.tmp" .)
  mv "$OUT/argocd-lua.tmp" "$OUT/argocd-lua"
fi
if [ ! -d "$OUT/argo-cd-resource-customizations" ]; then
  echo "[argocd] fetching Argo CD $ARGO_CD_VERSION's resource customizations from its Go module" >&2
  module=$(cd "$here/argocd" && go mod download -json "github.com/argoproj/argo-cd/v3@$ARGO_CD_VERSION" |
    sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  [ -d "$module/resource_customizations/argoproj.io/Rollout" ] ||
    { echo "[argocd] no resource_customizations/argoproj.io/Rollout in Argo CD $ARGO_CD_VERSION ($module)" >&2; exit 1; }
  rm -rf "$OUT/argo-cd.tmp"
  cp -r "$module/resource_customizations" "$OUT/argo-cd.tmp"
  chmod -R u+w "$OUT/argo-cd.tmp"
  mv "$OUT/argo-cd.tmp" "$OUT/argo-cd-resource-customizations"
fi
echo "$OUT/argocd-lua"
