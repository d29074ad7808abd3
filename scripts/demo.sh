#!/usr/bin/env bash
# The stepwise demo. Where the lab can run (root, or unprivileged user namespaces), in the lab: real
# requests through Traefik while a good version rolls out and a bad one is aborted by its analysis
# (tests/lab/demo.sh). Elsewhere, on the plain local control plane: a canary that rolls out a new
# version step by step, pods only. `scripts/demo.sh stop` stops the demo's controller (the lab or
# control plane keeps running; `scripts/just lab-down` / `scripts/just cluster-down` stop them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# shellcheck source=../tests/lab/lib.sh
. tests/lab/lib.sh
# lib.sh points these at the lab's cluster; the plain demo uses the plain one.
unset STEPWISE_CLUSTER_DIR STEPWISE_KWOK_EXTRA_STAGES
if [ "${STEPWISE_DEMO_PLAIN:-}" != 1 ] && why=$(lab_can_isolate); then
  if [ "${1:-}" = stop ]; then
    if netns_holder_alive; then tests/lab/exec.sh tests/lab/demo.sh stop; fi
    exit 0
  fi
  printf '\n\033[1m== Starting the lab (a first run builds the control plane, kube-proxy and Traefik: 20 to 30 minutes on 2 cores; each build says how far it is)\033[0m\n'
  tests/lab/up.sh
  exec tests/lab/exec.sh tests/lab/demo.sh
fi
if [ "${STEPWISE_DEMO_PLAIN:-}" != 1 ]; then
  echo "the lab cannot run here ($why): the demo runs on the plain local cluster, pods only, no traffic"
fi
state=target/demo
ns=stepwise-demo
mkdir -p "$state"

stop_controller() {
  if [ -f "$state/controller.pid" ]; then
    pid=$(cat "$state/controller.pid")
    if kill -0 "$pid" 2>/dev/null; then kill "$pid"; fi
    rm -f "$state/controller.pid"
  fi
}
if [ "${1:-}" = stop ]; then stop_controller; echo "demo controller stopped"; exit 0; fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1/5 Starting the local Kubernetes control plane (a first run builds it: 10 to 15 minutes on 2 cores, with progress)"
# The build's progress lines go to the screen too: a first run is long and says how far it is.
set +e
tests/cluster/up.sh 2>&1 | tee "$state/cluster-up.log" | grep --line-buffered '^\[build\]\|ERROR'
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || { tail -30 "$state/cluster-up.log"; exit 1; }
# shellcheck disable=SC1091
. target/cluster/env
export KUBECONFIG
k() { "$KUBECTL" "$@"; }
k get nodes

say "2/5 Building stepwise and installing its CRDs"
cargo test --workspace --no-run --quiet # the build `just test` makes too: neither builds the other again
k apply --server-side --force-conflicts -f crds/ >/dev/null
# Polled: kubectl's wait fails on a CRD that has no conditions yet instead of waiting.
for _ in $(seq 1 60); do
  [ "$(k get crd/rollouts.stepwise.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ] && break
  sleep 0.5
done
k delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
k create namespace "$ns" >/dev/null

say "3/5 Starting the controller (log: $state/controller.log)"
stop_controller
target/debug/stepwise-controller --kubeconfig "$KUBECONFIG" --namespace "$ns" --leader-elect=false \
  --metrics-addr 127.0.0.1:0 >"$state/controller.log" 2>&1 &
echo $! >"$state/controller.pid"

say "4/5 Applying examples/canary-basic.yaml (4 replicas, steps 25% / 5s / 50% / 5s / 75% / 5s)"
k -n "$ns" apply -f examples/canary-basic.yaml
status() { k -n "$ns" get rollout demo -o jsonpath="$1" 2>/dev/null; }
for _ in $(seq 1 60); do [ "$(status '{.status.phase}')" = Healthy ] && break; sleep 1; done
k -n "$ns" get rollout demo

say "5/5 Rolling out a new image: example.invalid/demo:2"
k -n "$ns" patch rollout demo --type merge \
  -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"example.invalid/demo:2"}]}}}}' >/dev/null
last=""
for _ in $(seq 1 120); do
  sleep 1
  line="$(status '{.status.message}')"
  pods="$(k -n "$ns" get rs -l stepwise.dev/pod-template-hash -o jsonpath='{range .items[*]}{.spec.template.spec.containers[0].image}={.status.readyReplicas} {end}' | sed 's/= /=0 /g')"
  if [ "$line $pods" != "$last" ]; then printf '  %-80s ready pods: %s\n' "$line" "$pods"; last="$line $pods"; fi
  if [ "$(status '{.status.phase}')" = Healthy ] && [ "$(status '{.status.currentPodHash}')" = "$(status '{.status.stableRS}')" ] && [ "$(status '{.status.replicas}')" = 4 ]; then break; fi
done
k -n "$ns" get rollout demo

cat <<MSG

The rollout reached Healthy. Try it yourself (the kubectl plugin comes next; these are the patches
it will make, listed in docs/operations.md):

  export KUBECONFIG=$KUBECONFIG PATH=$root/target/cluster/bin:\$PATH
  kubectl -n $ns get rollout demo -w                         # in a second terminal

  # a new version that stops for a person at the end:
  kubectl -n $ns patch rollout demo --type merge -p '{"spec":{"strategy":{"canary":{"steps":[{"setWeight":25},{"pause":{}}]}}}}'
  kubectl -n $ns patch rollout demo --type merge -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"example.invalid/demo:3"}]}}}}'

  # promote (end the pause):
  kubectl -n $ns patch rollout demo --subresource=status --type merge -p '{"status":{"pauseConditions":null}}'
  # or abort (everything back to the stable version), then retry:
  kubectl -n $ns patch rollout demo --subresource=status --type merge -p '{"status":{"abort":true}}'
  kubectl -n $ns patch rollout demo --subresource=status --type merge -p '{"status":{"abort":false}}'

  kubectl -n $ns get events --field-selector involvedObject.name=demo     # what happened, step by step

Stop the demo controller with scripts/demo.sh stop, the control plane with scripts/just cluster-down.
MSG
