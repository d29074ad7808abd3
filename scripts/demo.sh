#!/usr/bin/env bash
# The stepwise demo: a local control plane, the CRDs, the controller, and a canary that rolls out a
# new version step by step. `scripts/demo.sh stop` stops the demo's controller (the control plane
# keeps running; `scripts/just cluster-down` stops it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
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

say "1/5 Starting the local Kubernetes control plane (the first run builds it: about 20 minutes)"
tests/cluster/up.sh >"$state/cluster-up.log" 2>&1 || { tail -30 "$state/cluster-up.log"; exit 1; }
# shellcheck disable=SC1091
. target/cluster/env
export KUBECONFIG
k() { "$KUBECTL" "$@"; }
k get nodes

say "2/5 Building stepwise and installing its CRDs"
cargo build --quiet --bin stepwise-controller
k apply --server-side --force-conflicts -f crds/ >/dev/null
k wait --for=condition=Established crd/rollouts.stepwise.dev --timeout=30s >/dev/null
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
