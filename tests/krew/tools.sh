#!/usr/bin/env bash
# Builds krew and its manifest validator (validate-krew-manifest) from the Go module
# sigs.k8s.io/krew that tests/krew/tools/go.mod pins, into ~/.cache/stepwise/, once, keyed by that
# version and the hash of go.mod and go.sum; later runs return at once. Prints the directory that
# holds the two binaries on stdout. The validator is a command of krew's module because its checks
# are in krew's internal packages, which no other module may import.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^\s*sigs.k8s.io\/krew \(v[^ ]*\).*/\1/p' "$here/tools/go.mod")
[ -n "$version" ] || { echo "[krew] no sigs.k8s.io/krew version in $here/tools/go.mod" >&2; exit 1; }
CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
OUT=$CACHE_ROOT/krew-$version-$(cat "$here/tools/go.mod" "$here/tools/go.sum" | sha256sum | cut -c1-12)
if [ -x "$OUT/krew" ] && [ -x "$OUT/validate-krew-manifest" ]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.krew.lock"
flock -w 900 8 || { echo "[krew] timed out waiting for $CACHE_ROOT/.krew.lock" >&2; exit 1; }
if ! [ -x "$OUT/krew" ] || ! [ -x "$OUT/validate-krew-manifest" ]; then
  echo "[krew] building krew and validate-krew-manifest of sigs.k8s.io/krew $version into $OUT" >&2
  mkdir -p "$OUT.tmp"
  (cd "$here/tools" && GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=readonly \
    go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$OUT.tmp/" \
    sigs.k8s.io/krew/cmd/krew sigs.k8s.io/krew/cmd/validate-krew-manifest)
  rm -rf "$OUT"
  mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"
