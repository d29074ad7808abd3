#!/usr/bin/env bash
# Runs a command inside the lab's network namespace with the lab's environment (KUBECONFIG, PATH
# with kubectl and kubectl-stepwise, LAB_* addresses); with no command, an interactive shell.
# Start the lab first: tests/lab/up.sh.
set -euo pipefail
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
netns_holder_alive || lab_die "the lab is not running: start it with tests/lab/up.sh (scripts/just lab)"
[ -s "$LAB_ENV" ] || lab_die "the lab is half-started (no $LAB_ENV): run tests/lab/up.sh again"
if [ $# -eq 0 ]; then
  lab_log "a shell inside the lab (only lo here); kubectl and kubectl stepwise reach the lab's cluster; exit to leave"
  set -- bash --rcfile <(printf '. ~/.bashrc 2>/dev/null; . %q; PS1="(lab) $PS1"\n' "$LAB_ENV") -i
fi
# shellcheck disable=SC2016 # expanded by the inner shell
lab_exec bash -c '. "$0"; cd "$1"; shift; exec "$@"' "$LAB_ENV" "$PWD" "$@"
