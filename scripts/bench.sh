#!/usr/bin/env bash
# `just bench [N...] [--analysed N]...`: the controller's release build against the local control
# plane. For each N, N Rollouts updated at once; for each `--analysed N`, N Rollouts paused at 50 %
# with a background Prometheus analysis every 5 s, against a real Prometheus on 127.0.0.1.
# No arguments: N=100 and N=500, then the analysed fleet at N=100. Measures; asserts only that
# the analysed fleet's analyses did measure.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/cluster/up.sh >/dev/null
want_prometheus=
if [ $# -eq 0 ]; then want_prometheus=1; fi
for arg in "$@"; do
  if [ "$arg" = --analysed ]; then want_prometheus=1; fi
done
if [ -n "$want_prometheus" ]; then
  tests/cluster/prometheus.sh >/dev/null
fi
cargo build --release --quiet --bin stepwise-controller
cargo build --quiet -p stepwise-e2e --bin bench
target/debug/bench "$@"
