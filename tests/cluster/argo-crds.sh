#!/usr/bin/env bash
# Fetches Argo Rollouts' own CRDs (Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun
# and Experiment) from Argo's Go module at a pinned version, for the schema-parity test
# (crates/stepwise-api/tests/argo_parity.rs), and the manifests of Argo's examples and end-to-end
# tests (under manifests/), which tests/e2e/tests/argo_manifests.rs applies. Cached by version under ~/.cache/stepwise/: with a
# warm cache this prints the directory and returns at once. Prints the directory on stdout, the
# progress on stderr.
set -euo pipefail

# The Argo Rollouts version the parity test compares with. Bump it here; the cache key follows.
ARGO_ROLLOUTS_VERSION=v1.9.1

CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
OUT=$CACHE_ROOT/argo-crds-$ARGO_ROLLOUTS_VERSION
FILES="rollout-crd.yaml analysis-template-crd.yaml cluster-analysis-template-crd.yaml analysis-run-crd.yaml experiment-crd.yaml"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=
log() { printf '[argo-crds] %s\n' "$*" >&2; }
# shellcheck source=go-module.sh
. "$(dirname "$0")/go-module.sh"

complete() {
  local f
  for f in $FILES; do [ -s "$OUT/$f" ] || return 1; done
  [ -e "$OUT/manifests/.complete" ]
}

if complete; then
  echo "$OUT"
  exit 0
fi

# Several test binaries may call this at once: one downloads, the others wait.
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.argo-crds.lock"
flock -w 1800 8 || { log "timed out waiting for $CACHE_ROOT/.argo-crds.lock"; exit 1; }
if complete; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { log "needs the Go toolchain (go) to download github.com/argoproj/argo-rollouts"; exit 1; }


dir=$(go_module_dir "github.com/argoproj/argo-rollouts@$ARGO_ROLLOUTS_VERSION")
tmp="$OUT.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
for f in $FILES; do
  [ -s "$dir/manifests/crds/$f" ] || { log "$dir/manifests/crds/$f is missing"; rm -rf "$tmp"; exit 1; }
  cp "$dir/manifests/crds/$f" "$tmp/$f"
done
for d in examples test/e2e; do
  (cd "$dir" && find "$d" -type f \( -name '*.yaml' -o -name '*.yml' \)) | while read -r f; do
    mkdir -p "$tmp/manifests/$(dirname "$f")"
    cp "$dir/$f" "$tmp/manifests/$f"
  done
done
touch "$tmp/manifests/.complete"
chmod -R u+w "$tmp"
rm -rf "$OUT"
mv "$tmp" "$OUT"
log "Argo Rollouts $ARGO_ROLLOUTS_VERSION CRDs are in $OUT"
echo "$OUT"
