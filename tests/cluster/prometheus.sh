#!/usr/bin/env bash
# Unpacks Debian's prometheus package (the server binary the Prometheus provider's e2e tests query)
# under ~/.cache/stepwise/prometheus-<version>/ without installing it system-wide: no root, no
# service, nothing outside the cache. With a warm cache this returns at once. Prints the binary's
# path on stdout; progress goes to stderr.
set -euo pipefail

CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
log() { printf '[prometheus] %s\n' "$*" >&2; }
die() { printf '[prometheus] ERROR: %s\n' "$*" >&2; exit 1; }

# Warm cache: any unpacked version will do (the tests take whichever is there), so a second run
# needs neither apt nor the network.
for bin in "$CACHE_ROOT"/prometheus-*/usr/bin/prometheus; do
  if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
  fi
done

command -v apt-get >/dev/null || die "apt-get not found: this script unpacks Debian's prometheus package"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: this script unpacks Debian's prometheus package"

# Several test binaries may call this at once: one downloads, the others wait and reuse it.
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.prometheus.lock"
flock -w 600 8 || die "timed out waiting for $CACHE_ROOT/.prometheus.lock"
for bin in "$CACHE_ROOT"/prometheus-*/usr/bin/prometheus; do
  if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
  fi
done

work=$(mktemp -d "$CACHE_ROOT/.prometheus-download.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# apt-get download writes into the current directory and needs no root. The package lists may be
# missing or stale (a fresh container): refresh them once, then try again.
log "downloading Debian's prometheus package"
if ! (cd "$work" && apt-get download prometheus >"$work/apt.log" 2>&1); then
  log "download failed; refreshing the package lists (apt-get update) and retrying"
  if ! apt-get update >"$work/apt.log" 2>&1; then
    cat "$work/apt.log" >&2
    die "apt-get update failed (it may need root: run 'sudo apt-get update' once, then this script again)"
  fi
  (cd "$work" && apt-get download prometheus >"$work/apt.log" 2>&1) || {
    cat "$work/apt.log" >&2
    die "apt-get download prometheus failed"
  }
fi

deb=$(ls "$work"/prometheus_*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || die "apt-get download left no prometheus_*.deb in $work"
# Upstream version without the Debian epoch and revision: 2.42.0+ds-5+deb12u1 -> 2.42.0.
full=$(dpkg-deb -f "$deb" Version)
version=${full#*:}
version=${version%%[+~-]*}
out=$CACHE_ROOT/prometheus-$version

log "unpacking prometheus $full into $out"
rm -rf -- "$out.tmp"
dpkg-deb -x "$deb" "$out.tmp"
[ -x "$out.tmp/usr/bin/prometheus" ] || die "the package has no usr/bin/prometheus"
"$out.tmp/usr/bin/prometheus" --version >/dev/null 2>&1 || die "$out.tmp/usr/bin/prometheus does not run"
# Rename last, so an interrupted run never leaves a half-unpacked directory that looks complete.
rm -rf -- "$out"
mv "$out.tmp" "$out"
log "prometheus $version is ready"
echo "$out/usr/bin/prometheus"
