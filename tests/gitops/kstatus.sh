#!/usr/bin/env bash
# Builds tests/gitops/kstatus (kstatus from sigs.k8s.io/cli-utils, the library Flux's `wait` and
# health checks use) into ~/.cache/stepwise/, once, keyed by the version go.mod pins; later runs
# return at once. Prints the binary's path on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^\s*sigs.k8s.io\/cli-utils \(v[^ ]*\).*/\1/p' "$here/kstatus/go.mod")
[ -n "$version" ] || { echo "[kstatus] no sigs.k8s.io/cli-utils version in $here/kstatus/go.mod" >&2; exit 1; }
CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
OUT=$CACHE_ROOT/kstatus-cli-utils-$version-$(cat "$here/kstatus/main.go" "$here/kstatus/go.sum" | sha256sum | cut -c1-12)
if [ -x "$OUT/kstatus" ]; then
  echo "$OUT/kstatus"
  exit 0
fi
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.kstatus.lock"
flock -w 900 8 || { echo "[kstatus] timed out waiting for $CACHE_ROOT/.kstatus.lock" >&2; exit 1; }
if [ ! -x "$OUT/kstatus" ]; then
  echo "[kstatus] building kstatus of sigs.k8s.io/cli-utils $version into $OUT" >&2
  mkdir -p "$OUT"
  (cd "$here/kstatus" && GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod \
    go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$OUT/kstatus.tmp" .)
  mv "$OUT/kstatus.tmp" "$OUT/kstatus"
fi
echo "$OUT/kstatus"
