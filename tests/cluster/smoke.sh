#!/usr/bin/env bash
# End-to-end check of the local control plane (brings it up first if needed):
#   1. a Deployment of 3 replicas gets 3 Ready pods   (KCM + scheduler + kwok)
#   2. scaling it to 1 really deletes 2 pods           (kwok pod-delete stage)
#   3. a Service gets an EndpointSlice with endpoints  (KCM endpointslice controller)
#   4. a Job completes                                 (kwok pod-complete stage + job controller)
# All in a fresh namespace, deleted at the end. Last line: "smoke: N passed, M failed".
set -euo pipefail
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

"$CLUSTER_SRC/up.sh" >&2
# shellcheck disable=SC1090
. "$ENV_FILE"
K=("$KUBECTL" --kubeconfig "$KUBECONFIG" --request-timeout=20s)
NS=smoke-$(date +%s)-$$
IMAGE=registry.invalid/stepwise/smoke:0   # never pulled: kwok only fakes the container status
TIMEOUT=${SMOKE_TIMEOUT:-90}
passed=0
failed=0

# poll SECONDS CMD...: retry CMD every 0.5 s until it succeeds or the time is up.
poll() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

count_pods() { # count_pods APP -> "total ready"
  "${K[@]}" -n "$NS" get pods -l "app=$1" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    awk 'NF{t++} $1=="True"{r++} END{printf "%d %d\n", t, r}'
}
pods_are() { # pods_are APP TOTAL READY
  local got
  got=$(count_pods "$1") || return 1
  LAST="pods app=$1 (total ready): $got, want: $2 $3"
  [ "$got" = "$2 $3" ]
}

diagnose() {
  printf '  namespace %s:\n' "$NS" >&2
  "${K[@]}" -n "$NS" get deployments,replicasets,pods,services,endpointslices,jobs -o wide 2>&1 | sed 's/^/    /' >&2 || true
  printf '  recent events:\n' >&2
  "${K[@]}" -n "$NS" get events --sort-by=.lastTimestamp 2>&1 | tail -n 15 | sed 's/^/    /' >&2 || true
  "${K[@]}" get nodes -o wide 2>&1 | sed 's/^/    /' >&2 || true
}

check() { # check NAME FUNCTION
  local name=$1 t=$SECONDS
  LAST=""
  if "$2"; then
    passed=$((passed + 1))
    printf 'ok   - %s (%ss)\n' "$name" "$((SECONDS - t))"
  else
    failed=$((failed + 1))
    printf 'FAIL - %s (timeout %ss)%s\n' "$name" "$TIMEOUT" "${LAST:+: $LAST}"
    printf '[smoke] FAILED: %s%s\n' "$name" "${LAST:+ - $LAST}" >&2
    diagnose
  fi
}

deployment_ready() {
  "${K[@]}" -n "$NS" create deployment web --image="$IMAGE" --replicas=3 --port=80 >/dev/null || return 1
  poll "$TIMEOUT" pods_are web 3 3
}

scale_down() {
  "${K[@]}" -n "$NS" scale deployment web --replicas=1 >/dev/null || return 1
  # total counts Terminating pods too: this passes only when 2 pods are really gone
  poll "$TIMEOUT" pods_are web 1 1
}

slice_ready() {
  local got
  got=$("${K[@]}" -n "$NS" get endpointslices -l kubernetes.io/service-name=web \
    -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready}{"\n"}{end}') || return 1
  LAST="endpoints of service web: [${got//$'\n'/ }]"
  grep -q '=true$' <<<"$got"
}
service_endpoints() {
  "${K[@]}" -n "$NS" expose deployment web --port=80 --target-port=80 >/dev/null || return 1
  poll "$TIMEOUT" slice_ready
}

job_complete() {
  "${K[@]}" -n "$NS" create job smoke-job --image="$IMAGE" >/dev/null || return 1
  "${K[@]}" -n "$NS" wait --for=condition=Complete job/smoke-job --timeout="${TIMEOUT}s" >/dev/null 2>&1 && return 0
  LAST="job smoke-job: $("${K[@]}" -n "$NS" get job smoke-job -o jsonpath='{.status}' 2>&1)"
  return 1
}

cleanup_done=0
cleanup() {
  [ "$cleanup_done" = 1 ] && return 0
  cleanup_done=1
  if ! "${K[@]}" delete namespace "$NS" --wait=true --timeout=120s >/dev/null 2>&1; then
    printf '[smoke] warning: namespace %s was not deleted within 120s\n' "$NS" >&2
  fi
}
trap cleanup EXIT

sa_ready() { "${K[@]}" -n "$NS" get serviceaccount default >/dev/null 2>&1; }
if ! "${K[@]}" create namespace "$NS" >/dev/null || ! poll 60 sa_ready; then
  printf '[smoke] FAILED: could not create namespace %s with its default ServiceAccount\n' "$NS" >&2
  tail_logs 20
  cleanup
  echo "smoke: 0 passed, 4 failed"
  exit 1
fi

check "Deployment of 3 replicas gets 3 Ready pods" deployment_ready
check "scaling to 1 deletes 2 pods" scale_down
check "Service gets an EndpointSlice with endpoints" service_endpoints
check "Job completes" job_complete

cleanup
if [ "$failed" -gt 0 ]; then
  tail_logs 20
fi
echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
