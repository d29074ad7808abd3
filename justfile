# stepwise: the recipes people run. `scripts/just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Everything CI runs: format, lints, unit and property tests, the control-plane smoke test, the e2e tests, the chaos suite, the Helm chart and the lab (real traffic); side by side where they wait, each cluster suite on its own control plane, with a table of wall times at the end (`scripts/test.py e2e` for one recipe and what it needs).
test:
    scripts/test.py

# The one Rust build of everything the tests run: every test binary and every program, with one feature set (running `cargo test -p X` instead would build the dependencies again for X alone).
build:
    cargo test --workspace --no-run

# Build the local control plane's binaries from their Go modules (once; cached by version).
cluster-build:
    tests/cluster/build.sh >/dev/null

# Build Helm from its Go module (once; cached by version).
helm:
    scripts/helm.sh >/dev/null

# Build Traefik, the lab's data plane, from its Go module (once; cached by version).
traefik:
    tests/lab/traefik.sh >/dev/null

# Build the image from scratch with buildah, no base image pulled: static (musl) release builds of the controller and the plugin, and the CA bundle; prints its reference (localhost/stepwise-controller:<version>) and size. `just image --profile dev`, `--image REF`, `--push DEST`: scripts/image.sh --help.
image *args:
    scripts/image.sh {{args}}

# Fetch what the tests read (Argo's and the routers' CRDs from their Go modules, Debian's Prometheus) into the cache, and install Debian's chromium and chromium-driver for the dashboard's browser tests python3-aiosmtpd, the SMTP server of the email service's tests, and graphite-carbon and graphite-web, the Graphite of the graphite provider's tests.
downloads:
    tests/cluster/argo-crds.sh >/dev/null
    tests/cluster/router-crds.sh --fetch-only
    tests/cluster/prometheus.sh >/dev/null
    scripts/browser.sh >/dev/null
    scripts/smtp.sh >/dev/null
    scripts/graphite.sh >/dev/null

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
    UPDATE_CRDS=1 scripts/cargo-test.py stepwise-api:crds

# Fail when crds/ is stale.
check-crds:
    scripts/cargo-test.py stepwise-api:crds

# Unit and property tests (no cluster).
test-unit:
    tests/cluster/argo-crds.sh >/dev/null
    scripts/cargo-test.py stepwise-api stepwise-core stepwise-traffic stepwise-metrics stepwise-notify stepwise-controller kubectl-stepwise stepwise-example-router:lib stepwise-chaos:lib stepwise-lab:lib,bins,responder,load
    cargo test --workspace --doc

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
e2e: cluster-up prometheus build
    tests/cluster/router-crds.sh
    tests/gitops/kstatus.sh >/dev/null
    tests/gitops/argocd.sh >/dev/null
    scripts/cargo-test.py --jobs 3 stepwise-e2e stepwise-example-router:walk -- --test-threads=4

# The chaos suite, small fixed-seed versions: the controller SIGKILLed every 5-15 s under a fleet of 20, a fault-injecting proxy (429, 500, 409, latency, cut watches), a partition with expired watches, the real API server restarted mid-update, a leader cut off from it while a standby takes over, 40 random Rollouts.
chaos-test: chaos-test-restarts chaos-test-faults

# The chaos suite's restarts: the real API server restarted mid-update (nothing else may use its control plane meanwhile) and the controller SIGKILLed every 5-15 s.
chaos-test-restarts: cluster-up build
    scripts/cargo-test.py stepwise-chaos:apiserver_restart,kill_loop -- --test-threads=2

# The chaos suite's faults: the fault-injecting proxy, expired watches, the lost lease and the random Rollouts, and the suite's unit tests.
chaos-test-faults: cluster-up build
    scripts/cargo-test.py stepwise-chaos:lib,bins,faults,watch_expiry,lease_loss,random_rollouts -- --test-threads=2

# The chaos suite's full versions, whose figures are in docs/reliability.md: 200 Rollouts under the kill loop, 500 random Rollouts (CHAOS_SEED=n for other draws).
chaos: cluster-up build
    CHAOS_ROLLOUTS=200 scripts/cargo-test.py stepwise-chaos:kill_loop -- --nocapture
    CHAOS_RANDOM_ROLLOUTS=500 scripts/cargo-test.py stepwise-chaos:random_rollouts -- --nocapture

# The Helm chart on the local control plane: lint, schema, dry-runs, install, a canary as the chart's ServiceAccount, upgrade, uninstall, namespaced mode.
helm-test: cluster-up build
    tests/cluster/router-crds.sh
    tests/helm/test.sh

# The image on the local control plane: built (dev profile), its contents and size, `podman run --version`, the chart installed with it, then run by podman as the chart's ServiceAccount, taking the Lease and walking a canary to Healthy.
image-test: image-test-build cluster-build helm
    tests/image/test.sh

# The image test's build alone (the dev profile, localhost/stepwise-controller:test-dev), which `just test` runs at the lowest priority.
image-test-build:
    tests/image/test.sh --build-only

# Run the demo: in the lab, a good version rolled out with the live traffic split at each step, then a bad one aborted by its analysis (on the plain cluster where the lab cannot run).
demo:
    scripts/demo.sh

# Start the lab (the control plane in a network namespace with only lo, with kube-proxy, pod responders, Traefik, Prometheus and a metrics adapter) and enter it with a shell; `exit` leaves it running.
lab:
    tests/lab/up.sh
    tests/lab/exec.sh

# Start the lab without entering it.
lab-up:
    tests/lab/up.sh

# Stop the lab and everything in its namespace.
lab-down:
    tests/lab/down.sh

# The lab's tests: real requests through Traefik and the Gateway API, analyses on real error rates, zero downtime, an HPA, the Kubernetes metrics provider.
lab-test: lab-up
    tests/lab/exec.sh scripts/cargo-test.py --offline --jobs 3 stepwise-lab:traffic,analysis,zero_downtime,hpa,kubernetes_provider -- --test-threads=2

# Check what this machine has for building and running stepwise, the local cluster and the lab; one line each.
doctor:
    scripts/doctor.sh

# Benchmark: N Rollouts updated at once (N=100 and N=500 by default), an analysed fleet (--analysed N; N=100 by default), a routed fleet behind Istio VirtualServices (--routed N), and a scale fleet at steady state (--scale N); the last two are not in the default run.
bench *counts:
    scripts/bench.sh {{counts}}

# The scale fleet: N Rollouts (10,000 by default) of 1 replica created in stages, RSS, CPU per minute and every write at steady state, a restart, and a heap profile of the settled controller (docs/benchmarks.md).
scale n="10000":
    scripts/scale.sh {{n}}

# The dashboard under load: N Rollouts of 1 replica (1,000 by default) and P pages (20) on the release builds, all N updated at once; the dashboard's RSS and CPU, the API server's watches with 0 and P pages, events per page, Healthy-to-page delay, first snapshot; a table in target/bench/dashboard-N.md. `just bench-dashboard --rollouts 100 --pages 5 --details 2`.
bench-dashboard *args:
    scripts/bench-dashboard.sh {{args}}

# The property tests at 100,000 cases each, optimised (about 20 minutes on 2 cores).
test-deep:
    PROPTEST_CASES=100000 cargo test --release -p stepwise-core --test properties

# The plugin as krew installs it: the release's archive and manifest of the debug build, krew's own validation (validate-krew-manifest, built from krew's Go module), an install into a KREW_ROOT of its own and the installed plugin's version, then broken manifests that krew must refuse.
krew-test: build
    tests/krew/test.sh

# The release VERSION (the workspace's, e.g. 0.1.0): the image (scripts/image.sh), the plugin's archive, its sha256 and krew's manifest in dist/, checked by krew; prints the commands that publish them.
release VERSION:
    scripts/release.sh {{VERSION}}
