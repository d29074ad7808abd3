#!/usr/bin/env bash
# The demo inside the lab (scripts/demo.sh starts the lab and runs this in it): real requests
# through Traefik while stepwise rolls out a good version, the live split printed at every step;
# then a bad version (30 % of its requests fail) that a Prometheus analysis of those real requests
# aborts, and the split back to 100 % stable. `tests/lab/demo.sh stop` stops its controller.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
[ -n "${LAB_TRAEFIK_URL:-}" ] || { echo "run inside the lab: tests/lab/exec.sh tests/lab/demo.sh" >&2; exit 1; }
state=target/lab/demo
ns=stepwise-demo
host=demo.lab
mkdir -p "$state"

stop_pid() {
  if [ -f "$state/$1.pid" ]; then
    kill "$(cat "$state/$1.pid")" 2>/dev/null || true
    rm -f "$state/$1.pid"
  fi
}
if [ "${1:-}" = stop ]; then stop_pid controller; stop_pid load; echo "demo controller stopped"; exit 0; fi
trap 'stop_pid load' EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
k() { kubectl "$@"; }

say "1/4 A namespace, the controller, and the app: 5 pods of version 1 behind Traefik"
k delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
k create namespace "$ns" >/dev/null
stop_pid controller
target/debug/stepwise-controller --kubeconfig "$KUBECONFIG" --namespace "$ns" --leader-elect=false \
  --metrics-addr 127.0.0.1:0 >"$state/controller.log" 2>&1 &
echo $! >"$state/controller.pid"
sed -e "s|@HOST@|$host|" -e "s|@PROMETHEUS@|$LAB_PROMETHEUS_URL|" -e "s|@NAMESPACE@|$ns|" \
  tests/lab/manifests/demo.yaml | k apply -n "$ns" -f - >/dev/null
k wait -n "$ns" rollout/demo --for=jsonpath='{.status.phase}'=Healthy --timeout=60s >/dev/null
until curl -fsS -o /dev/null -H "Host: $host" "$LAB_TRAEFIK_URL/" 2>/dev/null; do sleep 0.5; done
k get pods -n "$ns" -o wide

# Steady load, 50 requests a second, the split of each second in load.log.
stop_pid load
lab-load --url "$LAB_TRAEFIK_URL/" --host "$host" --rate 50 --duration 600s --watch >"$state/load.log" 2>&1 &
echo $! >"$state/load.pid"

# follow UNTIL_PHASE: every 2 s, the Rollout's step and weight beside the last second of traffic.
follow() {
  local until=$1 phase step weight split seen=0
  while :; do
    phase=$(k get rollout demo -n "$ns" -o jsonpath='{.status.phase}')
    step=$(k get rollout demo -n "$ns" -o jsonpath='{.status.currentStepIndex}')
    weight=$(k get rollout demo -n "$ns" -o jsonpath='{.status.canary.weights.canary.weight}' 2>/dev/null || true)
    split=$(grep '^t=' "$state/load.log" | tail -n1)
    printf '  %-12s step %-2s canary weight %-4s| traffic: %s\n' "$phase" "${step:-0}" "${weight:-0}%" "${split:-(starting)}"
    if [ "$phase" = "$until" ]; then
      seen=$((seen + 1))
      [ "$seen" -ge 3 ] && break
    fi
    sleep 2
  done
}

say "2/4 Version 2 (good): steps 20% -> 50% -> analysis of its real success rate -> 80% -> 100%"
k patch rollout demo -n "$ns" --type merge -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"lab.invalid/demo:2","env":[{"name":"ERROR_RATE","value":"0"}]}]}}}}' >/dev/null
sleep 1
follow Healthy

say "3/4 Version 3 (bad: ERROR_RATE=0.3, 30% of its requests fail): the analysis aborts it"
k patch rollout demo -n "$ns" --type merge -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"lab.invalid/demo:3","env":[{"name":"ERROR_RATE","value":"0.3"}]}]}}}}' >/dev/null
sleep 1
follow Degraded

say "4/4 After the abort: all traffic on version 2 again"
sleep 3
grep '^t=' "$state/load.log" | tail -n3
kubectl-stepwise get rollout demo -n "$ns" || true
k get analysisruns -n "$ns"
echo
echo "The controller keeps running; its log: $state/controller.log. Stop it: tests/lab/demo.sh stop"
