#!/usr/bin/env bash
# `just scale [N]` (N = 10000 by default): the scale fleet of `bench --scale N` (Rollouts of 1
# replica created in stages up to N, RSS, CPU per minute and every write at steady state, and a
# restart), then the heap-profiling build of the controller on the whole fleet, and a summary of
# its heap profile. Measures; asserts nothing. Figures: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
tests/cluster/up.sh >/dev/null
echo "scale: building the release controller" >&2
cargo build --release --quiet --bin stepwise-controller
echo "scale: building the heap-profiling controller (profile heap, feature dhat-heap: target/heap/)" >&2
cargo build --profile heap --features dhat-heap --quiet -p stepwise-controller --bin stepwise-controller
cargo build --quiet -p stepwise-e2e --bin bench
STEPWISE_BENCH_HEAP_BIN=target/heap/stepwise-controller target/debug/bench --scale "$n"
python3 scripts/heap-summary.py "target/bench/dhat-heap-$n.json"
