#!/usr/bin/env bash
# `just bench [N...] [--analysed N]... [--routed N]...`: the controller's release build against
# the local control plane. For each N, N Rollouts updated at once; for each `--analysed N`, N
# Rollouts paused at 50 % with a background Prometheus analysis every 5 s, against a real
# Prometheus on 127.0.0.1; for each `--routed N`, N Rollouts, each behind its own Istio
# VirtualService (the real CRD), updated at once.
# No arguments: N=100 and N=500, then the analysed fleet at N=100. Measures; asserts only that
# the analysed fleet's analyses did measure and that the routed fleet ends Healthy with all
# traffic on stable.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/cluster/up.sh >/dev/null
want_prometheus=
want_routers=
if [ $# -eq 0 ]; then want_prometheus=1; fi
for arg in "$@"; do
  if [ "$arg" = --analysed ]; then want_prometheus=1; fi
  if [ "$arg" = --routed ]; then want_routers=1; fi
done
if [ -n "$want_prometheus" ]; then
  tests/cluster/prometheus.sh >/dev/null
fi
if [ -n "$want_routers" ]; then
  # The routed fleet writes VirtualServices: their CRD must be served (idempotent, a few seconds).
  tests/cluster/router-crds.sh
fi
cargo build --release --quiet --bin stepwise-controller
cargo build --quiet -p stepwise-e2e --bin bench
target/debug/bench "$@"
