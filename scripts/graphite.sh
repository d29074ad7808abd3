#!/usr/bin/env bash
# Makes sure Debian's graphite-carbon (carbon-cache, which receives points and writes them to
# whisper files) and graphite-web (the render API, a Django app) are installed, then prints their
# versions. The tests of the Graphite metric provider (crates/stepwise-metrics/tests/graphite.rs)
# start both in a temporary directory, on 127.0.0.1 and free ports, with Debian's
# /usr/bin/python3 (the python the packages install for, whatever python comes first on PATH);
# the packages' own services are never used.
#
# Quick when they are installed; when they are missing it installs them as root with apt-get,
# waiting for the dpkg lock and refreshing the package lists once on a failure (containers_apt of
# scripts/containers.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=containers.sh
. "$repo/scripts/containers.sh"

die() { printf '[graphite] ERROR: %s\n' "$*" >&2; exit 1; }

python=/usr/bin/python3
installed() {
  [ -x /usr/bin/carbon-cache ] && [ -x "$python" ] &&
    "$python" -c 'import carbon, graphite.settings, django, whisper' 2>/dev/null
}
installed || containers_apt graphite-carbon graphite-web
installed || die "carbon-cache or graphite-web's python modules are missing after installing graphite-carbon and graphite-web"

version() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo unknown; }
echo "graphite-carbon $(version graphite-carbon), graphite-web $(version graphite-web)," \
  "django $("$python" -c 'import django; print(django.get_version())')"
