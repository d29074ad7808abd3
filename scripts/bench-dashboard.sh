#!/usr/bin/env bash
# `just bench-dashboard [--rollouts N] [--pages P] [--details D]` (1000, 20, 4 by default): the
# dashboard's release build under load on the local control plane. N Rollouts of 1 replica made
# Healthy by the release controller, the dashboard on the whole cluster with P pages (event
# streams of the list) and D detail streams, then all N updated at once: the dashboard's RSS and
# CPU, the API server's watches with 0 and P pages, the events per page, the delay from Healthy
# in the API to the page, and a page's first snapshot. Measures; asserts nothing about speed.
# The table is printed and written to target/bench/dashboard-N.md.
set -euo pipefail
cd "$(dirname "$0")/.."
n=1000
prev=
for arg in "$@"; do
  case "$arg" in
    --rollouts=*) n=${arg#--rollouts=} ;;
    *) if [ "$prev" = --rollouts ]; then n=$arg; fi ;;
  esac
  prev=$arg
done
tests/cluster/up.sh >/dev/null
echo "bench-dashboard: building the release controller and plugin" >&2
cargo build --release --quiet -p stepwise-controller -p kubectl-stepwise
cargo build --quiet -p stepwise-e2e --bin bench_dashboard
target/debug/bench_dashboard "$@"
echo "bench-dashboard: the table is in target/bench/dashboard-$n.md" >&2
