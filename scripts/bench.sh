#!/usr/bin/env bash
# `just bench [N...]`: the controller's release build against the local control plane, N Rollouts
# updated at once (default N=100 and N=500). Measures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/cluster/up.sh >/dev/null
cargo build --release --quiet --bin stepwise-controller
cargo build --quiet -p stepwise-e2e --bin bench
target/debug/bench "$@"
