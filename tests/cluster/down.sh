#!/usr/bin/env bash
# Stops the processes tests/cluster/up.sh started (by recorded pid, reverse order, TERM then KILL)
# and removes the cluster state: etcd data dir, certificates, token, kubeconfig, env file.
# Logs in target/cluster/logs/ are kept. Safe to run any number of times.
set -euo pipefail
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

if [ ! -d "$STATE" ]; then
  log "no cluster state at $STATE; nothing to do"
  exit 0
fi
take_lock
cluster_down
log "cluster down (logs kept in $LOGS)"
