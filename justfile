# stepwise: the recipes people run. `scripts/just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Everything CI runs: format, lints, unit and property tests, the control-plane smoke test and the e2e tests.
test: fmt-check clippy check-crds test-unit smoke e2e helm-test

# Format the code.
fmt:
    cargo fmt --all

# Fail when the code is not formatted.
fmt-check:
    cargo fmt --all -- --check

# Clippy with warnings denied.
clippy:
    cargo clippy --workspace --all-targets -- -D warnings

# Regenerate crds/ from the API types.
crds:
    UPDATE_CRDS=1 cargo test -p stepwise-api --test crds

# Fail when crds/ is stale.
check-crds:
    cargo test -p stepwise-api --test crds

# Unit and property tests (no cluster).
test-unit:
    tests/cluster/argo-crds.sh >/dev/null
    cargo test --workspace --exclude stepwise-e2e

# Start the local control plane (builds it the first time; reuses a running one).
cluster-up:
    tests/cluster/up.sh

# Stop the local control plane and delete its state.
cluster-down:
    tests/cluster/down.sh

# Check the local control plane: Deployment, scaling, Service endpoints, Job.
smoke: cluster-up
    tests/cluster/smoke.sh

# Unpack Debian's Prometheus server into ~/.cache/stepwise (once) for the Prometheus provider tests.
prometheus:
    tests/cluster/prometheus.sh

# End-to-end tests of the controller on the local control plane.
e2e: cluster-up prometheus
    tests/cluster/router-crds.sh
    cargo build --bins
    cargo test -p stepwise-e2e -- --test-threads=4

# The Helm chart on the local control plane: lint, schema, dry-runs, install, a canary as the chart's ServiceAccount, upgrade, uninstall, namespaced mode.
helm-test: cluster-up
    tests/cluster/router-crds.sh
    cargo build --bins
    tests/helm/test.sh

# Run the demo: control plane, CRDs, controller, a canary rolling out step by step.
demo:
    scripts/demo.sh

# Benchmark: N Rollouts updated at once (N=100 and N=500 by default), and an analysed fleet (--analysed N; N=100 by default).
bench *counts:
    scripts/bench.sh {{counts}}

# The property tests at 100,000 cases each, optimised (about 20 minutes on 2 cores).
test-deep:
    PROPTEST_CASES=100000 cargo test --release -p stepwise-core --test properties
