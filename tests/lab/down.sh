#!/usr/bin/env bash
# Stops everything the lab started: its components, its control plane, then every process still in
# its network namespace, and the namespace itself. Logs in target/lab/logs/ are kept. Safe to run
# any number of times.
set -euo pipefail
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

if ! netns_holder_alive; then
  lab_log "the lab is not running"
  rm -f "$LAB_ENV"
  exit 0
fi
for c in lab-metrics-adapter prometheus traefik lab-responder kube-proxy; do
  f=$LAB_RUN/$c.pid
  if [ -s "$f" ]; then
    read -r pid _ <"$f" || true
    kill "$pid" 2>/dev/null || true
    rm -f "$f"
  fi
done
lab_exec "$REPO_ROOT/tests/cluster/down.sh" || true
# Whatever else still runs in the namespace (a shell, a test's controller) goes too.
ns=$(readlink "/proc/$(cat "$NETNS_PID_FILE")/ns/net")
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" = "$(cat "$NETNS_PID_FILE")" ] && continue
  if [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$ns" ]; then kill "$pid" 2>/dev/null || true; fi
done
netns_down
rm -f "$LAB_ENV"
lab_log "lab down (logs kept in $LAB_LOGS)"
