#!/usr/bin/env bash
# Makes sure Debian's chromium and chromium-driver (chromedriver) are installed, then prints their
# versions. The e2e tests of the dashboard (tests/e2e/src/browser.rs) drive a headless chromium
# through chromedriver over the W3C WebDriver protocol. Debian's packages rather than a downloaded
# Chrome for Testing: both come from one source package, so the driver always matches the browser,
# and apt keeps them patched.
#
# Quick when they are installed; when they are missing it installs them as root with apt-get,
# waiting for the dpkg lock and refreshing the package lists once on a failure (containers_apt of
# scripts/containers.sh). STEPWISE_CHROMIUM and STEPWISE_CHROMEDRIVER point the tests at other
# builds: this script then only checks that they run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=containers.sh
. "$repo/scripts/containers.sh"

die() { printf '[browser] ERROR: %s\n' "$*" >&2; exit 1; }

missing=()
# need VARIABLE DEFAULT PACKAGE: the program VARIABLE names (DEFAULT when unset); PACKAGE is
# installed when the default is missing.
need() {
  local path=${!1:-$2}
  [ -x "$path" ] && return
  [ -z "${!1:-}" ] || die "$1=$path is not an executable"
  missing+=("$3")
}
need STEPWISE_CHROMIUM /usr/bin/chromium chromium
need STEPWISE_CHROMEDRIVER /usr/bin/chromedriver chromium-driver
[ "${#missing[@]}" = 0 ] || containers_apt "${missing[@]}"

# Debian's /usr/bin/chromium is a shell wrapper that may complain on stderr (about /dev/shm, say):
# only the version line matters here.
"${STEPWISE_CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null || die "chromium --version failed"
"${STEPWISE_CHROMEDRIVER:-/usr/bin/chromedriver}" --version || die "chromedriver --version failed"
