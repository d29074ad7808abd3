#!/usr/bin/env bash
# Builds Traefik, the lab's data plane, from its Go module at the pinned version, into
# ~/.cache/stepwise/traefik-<version>/traefik. Prints the binary's path on stdout; progress on
# stderr. With a warm cache this returns at once.
#
# The module's source is copied out of the Go module cache and built with its own go.mod (and so
# its own replace directives), changed in three ways because some of what it names cannot be had
# here. None of them touches routing, load balancing, metrics or the Kubernetes providers:
#   1. github.com/traefik/traefik/dynamic/ext is a nested module the module zip leaves out and no
#      module proxy serves; open-source Traefik declares two empty structs in it, so do we.
#   2. github.com/abbot/go-http-auth is replaced by Traefik with a fork at a pseudo-version that is
#      not served here; we build the upstream v0.4.0 instead, plus the two functions the fork adds
#      and Traefik's basic and digest auth middlewares call (CheckSecret, RequireAuthStale).
#   3. The ACME DNS-challenge providers (lego's providers/dns, which pulls in dozens of DNS vendors'
#      SDKs, several not served here) are left out: asking for one is an error. The lab has no DNS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# Also the version of the Traefik CRDs that tests/cluster/router-crds.sh installs.
TRAEFIK_VERSION=v3.7.13

CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
OUT=$CACHE_ROOT/traefik-$TRAEFIK_VERSION
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '[traefik] %s\n' "$*" >&2; }
# shellcheck source=../cluster/go-module.sh
. "$here/../cluster/go-module.sh"

if [ -x "$OUT/traefik" ]; then
  echo "$OUT/traefik"
  exit 0
fi
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.traefik.lock"
flock -w 3600 8 || { log "timed out waiting for $CACHE_ROOT/.traefik.lock"; exit 1; }
if [ -x "$OUT/traefik" ]; then
  echo "$OUT/traefik"
  exit 0
fi

started=$SECONDS
log "building Traefik $TRAEFIK_VERSION from its Go module (cold: about 10 minutes on 2 cores, most of it compiling)"
module=$(go_module_dir "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")
src=$OUT/src
rm -rf "$src"
mkdir -p "$OUT"
cp -r "$module" "$src"
chmod -R u+w "$src"

# 1. The nested extension module.
mkdir -p "$src/pkg/config/dynamic/ext"
printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24\n' >"$src/pkg/config/dynamic/ext/go.mod"
cat >"$src/pkg/config/dynamic/ext/ext.go" <<'EOF'
// Package ext holds the extension points of the dynamic configuration; empty in open-source Traefik.
package ext

// HTTP extends the HTTP configuration.
type HTTP struct{}

// Router extends a router.
type Router struct{}
EOF
# 2. The basic/digest auth library: upstream v0.4.0 and the fork's two additions, as a local module.
auth=$src/third_party/go-http-auth
mkdir -p "$auth"
cp "$(go_module_dir github.com/abbot/go-http-auth@v0.4.0)"/*.go "$auth/"
rm -f "$auth"/*_test.go
chmod -R u+w "$auth"
printf 'module github.com/abbot/go-http-auth\n\ngo 1.24\n\nrequire (\n\tgolang.org/x/crypto v0.56.0\n\tgolang.org/x/net v0.58.0\n)\n' >"$auth/go.mod"
cat >"$auth/traefik_fork.go" <<'EOF'
package auth

import (
	"net/http"
	"strings"
)

// CheckSecret reports whether password matches secret, a hashed password entry; as in the fork of
// this library that Traefik pins.
func CheckSecret(password, secret string) bool {
	compare := compareFuncs[0].compare
	for _, cmp := range compareFuncs[1:] {
		if strings.HasPrefix(secret, cmp.prefix) {
			compare = cmp.compare
			break
		}
	}
	return compare([]byte(secret), []byte(password)) == nil
}

// RequireAuthStale asks the client to authenticate again; the fork also marks the nonce stale.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
	a.RequireAuth(w, r)
}
EOF
(cd "$src" && GOFLAGS= go mod edit -replace github.com/abbot/go-http-auth=./third_party/go-http-auth)
# 3. No ACME DNS-challenge providers.
acme=$src/pkg/provider/acme/provider.go
grep -q 'dns.NewDNSChallengeProviderByName(p.DNSChallenge.Provider)' "$acme" ||
  { log "$acme no longer looks as expected; update this script for Traefik $TRAEFIK_VERSION"; exit 1; }
python3 - "$acme" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace('\t"github.com/go-acme/lego/v5/providers/dns"\n', '')
s = s.replace(
    'provider, err = dns.NewDNSChallengeProviderByName(p.DNSChallenge.Provider)',
    'err = fmt.Errorf("ACME DNS challenge provider %q: not built into the stepwise lab\'s Traefik", p.DNSChallenge.Provider)')
open(p, 'w').write(s)
PY

ld="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
go_build_progress "Traefik $TRAEFIK_VERSION" "$src" -trimpath -buildvcs=false -ldflags="$ld" -o "$OUT/traefik.tmp" ./cmd/traefik
mv "$OUT/traefik.tmp" "$OUT/traefik"
rm -rf "$src"
log "Traefik $TRAEFIK_VERSION built in $((SECONDS - started)) s: $OUT/traefik"
echo "$OUT/traefik"
