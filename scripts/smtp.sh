#!/usr/bin/env bash
# Makes sure Debian's python3-aiosmtpd (and the openssl program, with which the email and GitHub
# services' tests make their certificates and keys) are installed, then prints aiosmtpd's version. The tests of the
# email service (crates/stepwise-notify/tests/email.rs) send through a real SMTP server:
# crates/stepwise-notify/tests/smtp_receiver.py, an aiosmtpd server (RFC 5321, AUTH, STARTTLS)
# run by Debian's /usr/bin/python3, which is the python the package installs for, whatever python
# comes first on PATH.
#
# Quick when it is installed; when it is missing it installs it as root with apt-get, waiting for
# the dpkg lock and refreshing the package lists once on a failure (containers_apt of
# scripts/containers.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=containers.sh
. "$repo/scripts/containers.sh"

die() { printf '[smtp] ERROR: %s\n' "$*" >&2; exit 1; }

python=/usr/bin/python3
imports() { [ -x "$python" ] && "$python" -c 'import aiosmtpd' 2>/dev/null; }
command -v openssl >/dev/null || containers_apt openssl
imports || containers_apt python3-aiosmtpd
imports || die "$python cannot import aiosmtpd after installing python3-aiosmtpd"

echo "aiosmtpd $("$python" -c 'import aiosmtpd; print(aiosmtpd.__version__)')"
