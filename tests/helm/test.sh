#!/usr/bin/env bash
# The Helm chart (charts/stepwise) on the local control plane. `just helm-test` runs it after
# starting the control plane, installing the routers' CRDs and building the binaries.
#
#  1. the chart's CRDs are the bytes of crds/;
#  2. helm lint, and values.schema.json refusing wrong values;
#  3. helm template with the defaults and with every option (tests/helm/values/*.yaml), each
#     checked by the API server (kubectl apply --dry-run=server); the defaults render nothing of
#     the dashboard;
#  4. helm install (all namespaces, with the dashboard and its actions); the controller binary
#     then runs outside the cluster as the chart's ServiceAccount (a TokenRequest token) with the
#     Deployment's own arguments, and a canary through a Gateway API HTTPRoute with a Job analysis
#     (its argument from a Secret) and a restart completes, with no request refused; requests
#     outside the chart's rules are refused. The dashboard runs likewise as its own ServiceAccount:
#     people signed in with their tokens see and do what their own RBAC allows (impersonation),
#     and its ServiceAccount may read and impersonate, not change Rollouts nor read the rest;
#  5. helm upgrade to changed values changes the permissions (the dashboard read-only: no
#     Events); helm uninstall leaves nothing of the release but the CRDs;
#  6. the namespaced mode: a Rollout in the watched namespace completes, the rest of the cluster
#     is refused, and a Rollout elsewhere is left alone; the dashboard reads the watched namespace
#     alone.
#
# Prints "helm-test: N passed, M failed" last and exits non-zero if anything failed. Logs of the
# controller runs: target/helm-test/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
chart=$repo/charts/stepwise
state=${STEPWISE_CLUSTER_DIR:-$repo/target/cluster}
out=$repo/target/helm-test
mkdir -p "$out"

log() { printf '[helm-test] %s\n' "$*" >&2; }
die() { printf '[helm-test] ERROR: %s\n' "$*" >&2; exit 1; }

[ -s "$state/env" ] || die "no $state/env: start the local control plane first (just cluster-up)"
KUBECONFIG=$(sed -n 's/^KUBECONFIG=//p' "$state/env")
KUBECTL=$(sed -n 's/^KUBECTL=//p' "$state/env")
API_SERVER=$(sed -n 's/^API_SERVER=//p' "$state/env")
export KUBECONFIG
controller_bin=$repo/target/debug/stepwise-controller
plugin_bin=$repo/target/debug/kubectl-stepwise
[ -x "$controller_bin" ] && [ -x "$plugin_bin" ] || die "build the binaries first: scripts/just build"
HELM=$("$repo/scripts/helm.sh")
k() { "$KUBECTL" "$@"; }

passed=0
failed=0
ok() { passed=$((passed + 1)); log "PASS: $*"; }
bad() { failed=$((failed + 1)); log "FAIL: $*"; }

# Names unique to this run: several clones may share the control plane.
id=$(printf '%x' "$(( $(date +%s%N) / 1000 % 0xffffff ))")
rel=sw$id                      # the all-namespaces release
rel_ns=helm-$id-system         # ... its namespace
app_ns=helm-$id-app            # where its controller runs a canary
nsrel=swns$id                  # the namespaced release
nsrel_ns=helm-$id-ns-system
watched=helm-$id-watched       # the namespaced release's namespace
other=helm-$id-other           # a namespace the namespaced release must not touch
dry_ns=helm-$id-dry
namespaces=("$rel_ns" "$app_ns" "$nsrel_ns" "$watched" "$other" "$dry_ns")
pids=()

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$HELM" uninstall "$rel" -n "$rel_ns" --wait=false >/dev/null 2>&1 || true
  "$HELM" uninstall "$nsrel" -n "$nsrel_ns" --wait=false >/dev/null 2>&1 || true
  k delete namespace "${namespaces[@]}" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# wait_for WHAT SECONDS COMMAND...: retries COMMAND every second until it succeeds.
wait_for() {
  local what=$1 limit=$2 i
  shift 2
  for ((i = 0; i < limit; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "timed out after ${limit}s waiting for $what"
  return 1
}

# jsonpath NS KIND/NAME PATH
jp() { k -n "$1" get "$2" -o "jsonpath=$3" 2>/dev/null; }

for ns in "${namespaces[@]}"; do k create namespace "$ns" >/dev/null; done

# ---- 1. the chart's CRDs are crds/ ---------------------------------------------------------------
if diff -r "$repo/crds" "$chart/crds" >"$out/crds.diff"; then
  ok "charts/stepwise/crds/ has the same files and bytes as crds/"
else
  bad "charts/stepwise/crds/ differs from crds/ (cp crds/*.yaml charts/stepwise/crds/):"
  cat "$out/crds.diff" >&2
fi

# ---- 2. lint and schema --------------------------------------------------------------------------
# Each case: a name, then helm flags. The namespaced case needs its namespace.
cases=(
  "defaults|"
  "all-options|-f $here/values/all-options.yaml"
  "namespaced|-f $here/values/namespaced.yaml --set watchNamespace=$watched"
  "minimal|-f $here/values/minimal.yaml"
  "bring-your-own-rbac|-f $here/values/bring-your-own-rbac.yaml"
  "dashboard|-f $here/values/dashboard.yaml"
  "dashboard-namespaced|-f $here/values/dashboard.yaml --set watchNamespace=$watched"
)
for c in "${cases[@]}"; do
  name=${c%%|*}
  # shellcheck disable=SC2206
  flags=(${c#*|})
  if "$HELM" lint --strict "$chart" "${flags[@]}" >"$out/lint-$name.log" 2>&1; then
    ok "helm lint --strict ($name)"
  else
    bad "helm lint --strict ($name)"; cat "$out/lint-$name.log" >&2
  fi
done

# A wrong value fails at install: values.schema.json, or the templates' own checks.
wrong=(
  "replicaCount=-1"
  "replicaCount=two"
  "image.pullPolicy=Sometimes"
  "controller.logFormat=xml"
  "controller.concurrency=0"
  "watchNamespace=Not_A_Namespace"
  "controller.shard=Shard_A"
  "metrics.port=70000"
  "metrics.serviceMonitor.interval=often"
  "routers.linkerd.enabled=true"
  "replicas=2"
  "replicaCount=2,leaderElection.enabled=false"
  "metrics.service.enabled=false,metrics.serviceMonitor.enabled=true"
  "dashboard.enabled=yes"
  "dashboard.replicas=-1"
  "dashboard.service.type=Ingress"
  "dashboard.service.port=0"
  "dashboard.address=0.0.0.0:3100"
  "tracing.otlpEndpoint=collector:4318"
  "tracing.otlp=x"
  "rbac.extraRules[0].verbs[0]=get"
)
for w in "${wrong[@]}"; do
  if "$HELM" install --dry-run=client wrong "$chart" -n "$dry_ns" --set "$w" >"$out/wrong.log" 2>&1; then
    bad "helm install --set $w was accepted"
  else
    ok "helm install --set $w is refused: $(grep -m1 -o 'values don.t meet.*\|execution error.*\|Error:.*' "$out/wrong.log" | head -c 160)"
  fi
done

# ---- 3. helm template, checked by the API server --------------------------------------------------
# The ServiceMonitor of all-options.yaml needs prometheus-operator's CRD.
"$here/servicemonitor-crd.sh" >/dev/null
for c in "${cases[@]}"; do
  name=${c%%|*}
  # shellcheck disable=SC2206
  flags=(${c#*|})
  if "$HELM" template "dry$id" "$chart" -n "$dry_ns" --include-crds "${flags[@]}" >"$out/template-$name.yaml" 2>"$out/template-$name.log" \
    && k apply --dry-run=server -f "$out/template-$name.yaml" >"$out/dry-run-$name.log" 2>&1; then
    ok "helm template ($name) | kubectl apply --dry-run=server: $(grep -c . "$out/dry-run-$name.log") objects"
  else
    bad "helm template ($name) | kubectl apply --dry-run=server"
    cat "$out/template-$name.log" "$out/dry-run-$name.log" >&2 2>/dev/null || true
  fi
done
grep -qx -- "        - --shard=eu-1" "$out/template-all-options.yaml" \
  && ok "controller.shard becomes --shard" || bad "no --shard=eu-1 in the all-options Deployment"
grep -A1 -- "- name: OTEL_EXPORTER_OTLP_ENDPOINT" "$out/template-all-options.yaml" \
  | grep -q 'value: "http://otel-collector.observability:4318"' \
  && ! grep -q OTEL_EXPORTER_OTLP_ENDPOINT "$out/template-defaults.yaml" \
  && ok "tracing.otlpEndpoint sets OTEL_EXPORTER_OTLP_ENDPOINT, and only when set" \
  || bad "tracing.otlpEndpoint does not set OTEL_EXPORTER_OTLP_ENDPOINT alone"
grep -A7 -- "# rbac.extraRules" "$out/template-all-options.yaml" | tr -d ' \n' | grep -q -- '-apiGroups:-""resources:-configmapsverbs:-get-patch' \
  && ! grep -q "rbac.extraRules" "$out/template-defaults.yaml" \
  && ok "rbac.extraRules become rules of the controller's ClusterRole" \
  || bad "rbac.extraRules not in the all-options ClusterRole"
grep -qx -- "        - --self-service-notifications" "$out/template-all-options.yaml" \
  && grep -A10 -- "# notifications.selfService" "$out/template-all-options.yaml" | tr -d ' \n' \
    | grep -qF 'resources:[secrets]resourceNames:[stepwise-notification-secret]verbs:[get]' \
  && ! grep -q -- "--self-service-notifications\|notifications.selfService" "$out/template-defaults.yaml" \
  && ok "notifications.selfService passes --self-service-notifications and grants the namespaces' notification Secret, only when set" \
  || bad "notifications.selfService does not set the flag and the rule alone"
# The dashboard is off by default: not an object, not a rule, not a word.
if grep -in dashboard "$out/template-defaults.yaml" >"$out/dashboard-defaults.log"; then
  bad "the defaults render something of the dashboard:"; head -n 5 "$out/dashboard-defaults.log" >&2
else
  ok "with the defaults nothing named dashboard renders"
fi
# dashboard_objects CASE: "Kind/name namespace" of each object of the dashboard a case renders.
dashboard_objects() {
  python3 - "$out/template-$1.yaml" <<'PY' | grep -- '-dashboard ' | sort | tr '\n' ' '
import re, sys
for doc in open(sys.argv[1]).read().split("\n---"):
    kind = re.search(r"^kind: (\S+)", doc, re.M)
    meta = re.search(r"^metadata:\n((?:  .*\n?)*)", doc, re.M)
    if kind and meta:
        name = re.search(r'^  name: "?([^"\n]+)', meta.group(1), re.M)
        ns = re.search(r'^  namespace: "?([^"\n]+)', meta.group(1), re.M)
        print(f"{kind.group(1)}/{name.group(1)} {ns.group(1) if ns else '-'}")
PY
}
dry_dash=dry$id-stepwise-dashboard
cluster_dash=$dry_ns-$dry_dash
got=$(dashboard_objects dashboard)
expected="ClusterRole/$cluster_dash - ClusterRoleBinding/$cluster_dash - Deployment/$dry_dash $dry_ns Service/$dry_dash $dry_ns ServiceAccount/$dry_dash $dry_ns "
[ "$got" = "$expected" ] && ok "the dashboard (all namespaces): $got" || bad "the dashboard's objects: '$got', not '$expected'"
got=$(dashboard_objects dashboard-namespaced)
expected="ClusterRole/$cluster_dash - ClusterRoleBinding/$cluster_dash - Deployment/$dry_dash $dry_ns Role/$dry_dash $watched RoleBinding/$dry_dash $watched Service/$dry_dash $dry_ns ServiceAccount/$dry_dash $dry_ns "
[ "$got" = "$expected" ] && ok "the dashboard (namespaced): a Role and RoleBinding in $watched, a ClusterRole for sign-in and impersonation" \
  || bad "the namespaced dashboard's objects: '$got', not '$expected'"
[ "$(grep -cx -- "        - --namespace=$watched" "$out/template-dashboard-namespaced.yaml")" = 2 ] \
  && ok "namespaced: the controller and the dashboard both run with --namespace=$watched" || bad "namespaced: not two --namespace=$watched"
# Every option the values document is set by one of the files: a value missing from them all is
# an untested option.
if python3 - "$chart/values.yaml" "$here"/values/*.yaml <<'PY'; then
import sys, re
def keys(path):
    # Leaf keys as dotted paths, from the indentation of a plain YAML file.
    out, stack = set(), []
    for line in open(path):
        if not line.strip() or line.lstrip().startswith("#") or line.lstrip().startswith("-"):
            continue
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):(.*)$", line.rstrip("\n"))
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        out.add(".".join(stack))
    return out
documented = keys(sys.argv[1])
leaves = {k for k in documented if not any(o.startswith(k + ".") for o in documented)}
covered = set().union(*(keys(p) for p in sys.argv[2:]))
# A value set as a whole object covers its leaves.
missing = sorted(k for k in leaves if not any(k == c or k.startswith(c + ".") for c in covered) and k != "watchNamespace")
if missing:
    print("values no file in tests/helm/values sets:", ", ".join(missing))
    sys.exit(1)
PY
  ok "every value in values.yaml is set by a file in tests/helm/values/ (watchNamespace by the namespaced case)"
else
  bad "some values are not exercised by tests/helm/values/"
fi

# ---- helpers for running the controller as a ServiceAccount ----------------------------------------
# sa_kubeconfig NS SA FILE: a kubeconfig for the same API server and CA, with a TokenRequest token.
sa_kubeconfig() {
  local ns=$1 sa=$2 file=$3 token ca
  token=$(k create token "$sa" -n "$ns" --duration=1h)
  ca=$(k config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')
  umask 077
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$API_SERVER", certificate-authority-data: "$ca"}
users:
- name: $sa
  user: {token: "$token"}
contexts:
- name: $sa
  context: {cluster: local, user: $sa}
current-context: $sa
EOF
}

# deployment_args NS NAME: the first container's args, one a line, without --metrics-addr or
# --address (the pod's 0.0.0.0 is replaced by a loopback port here).
deployment_args() {
  k -n "$1" get deployment "$2" -o json | python3 -c '
import json, sys
c = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]
for a in c["args"]:
    if not a.startswith(("--metrics-addr", "--address")):
        print(a)'
}
deployment_env() {
  k -n "$1" get deployment "$2" -o "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"$3\")].value}"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_code() { python3 -c '
import sys, urllib.request, urllib.error
try:
    print(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)' "$1"; }
ready() { [ "$(http_code "http://127.0.0.1:$1/readyz")" = 200 ]; }

# start_controller NAME KUBECONFIG PORT ARGS...: the debug build in the background, as a pod of the
# Deployment would run it.
start_controller() {
  local name=$1 kc=$2 port=$3
  shift 3
  RUST_LOG=$rust_log STEPWISE_IDENTITY="helm-test-$name-$id" \
    "$controller_bin" --kubeconfig="$kc" --metrics-addr="127.0.0.1:$port" "$@" \
    >"$out/controller-$name.log" 2>&1 </dev/null &
  pids+=($!)
  log "started the controller ($name, pid $!): $* (log: $out/controller-$name.log)"
}

# no_refusals LOG: the controller's log names no refused request.
no_refusals() {
  if grep -i 'forbidden' "$1" >"$out/refusals.log"; then
    bad "requests of the controller were refused (a missing RBAC rule):"; head -n 20 "$out/refusals.log" >&2
  else
    ok "no request of the controller was refused ($(basename "$1"))"
  fi
}

# sa_of SA_KUBECONFIG: which ServiceAccount a kubeconfig of sa_kubeconfig is, for the messages.
sa_of() { printf 'ServiceAccount %s' "$(sed -n 's/^current-context: //p' "$1")"; }
# can SA_KUBECONFIG VERB RESOURCE [FLAGS]: kubectl auth can-i as the ServiceAccount.
can() { k --kubeconfig="$1" auth can-i "${@:2}" 2>/dev/null; }
expect_can() { if can "$@" >/dev/null; then ok "$(sa_of "$1") may ${*:2}"; else bad "$(sa_of "$1") may not ${*:2}"; fi; }
expect_cannot() { if can "$@" >/dev/null; then bad "$(sa_of "$1") may ${*:2}"; else ok "$(sa_of "$1") may not ${*:2}"; fi; }
# expect_review true|false SA_KUBECONFIG WHAT ATTRIBUTES: the answer of a SelfSubjectAccessReview
# of ATTRIBUTES (its resourceAttributes, flow-style YAML), for what kubectl auth can-i cannot
# name (a resource nobody serves, such as the userextras/KEY of impersonation).
expect_review() {
  local allowed
  allowed=$(k --kubeconfig="$2" create --validate=false -o 'jsonpath={.status.allowed}' -f - 2>/dev/null <<EOF
apiVersion: authorization.k8s.io/v1
kind: SelfSubjectAccessReview
spec: {resourceAttributes: $4}
EOF
  )
  if [ "$allowed" = "$1" ]; then ok "$(sa_of "$2") may $3: $allowed"; else bad "$(sa_of "$2") may $3: '$allowed', not $1"; fi
}
# may_get_metrics SA_KUBECONFIG GROUP NS: whether the ServiceAccount may get metrics of GROUP, by a
# SelfSubjectAccessReview (kubectl auth can-i cannot name a resource of a group nobody serves).
may_get_metrics() {
  k --kubeconfig="$1" create --validate=false -o 'jsonpath={.status.allowed}' -f - 2>/dev/null <<EOF
apiVersion: authorization.k8s.io/v1
kind: SelfSubjectAccessReview
spec: {resourceAttributes: {verb: get, group: $2, resource: pods, namespace: $3}}
EOF
}
# expect_metrics true|false SA_KUBECONFIG NS: the ServiceAccount may (not) read both metrics APIs.
expect_metrics() {
  local group allowed
  for group in custom.metrics.k8s.io external.metrics.k8s.io; do
    allowed=$(may_get_metrics "$2" "$group" "$3")
    if [ "$allowed" = "$1" ]; then ok "$(sa_of "$2") may get $group: $allowed"; else bad "$(sa_of "$2") may get $group: '$allowed', not $1"; fi
  done
}

rollout_field() { jp "$1" "rollout.stepwise.dev/$2" "$3"; }
phase_is() { [ "$(rollout_field "$1" "$2" '{.status.phase}')" = "$3" ]; }
healthy_on_new() {
  [ "$(rollout_field "$1" "$2" '{.status.phase}')" = Healthy ] &&
    [ -n "$(rollout_field "$1" "$2" '{.status.stableRS}')" ] &&
    [ "$(rollout_field "$1" "$2" '{.status.stableRS}')" = "$(rollout_field "$1" "$2" '{.status.currentPodHash}')" ] &&
    [ "$(rollout_field "$1" "$2" '{.spec.template.spec.containers[0].image}')" = "$3" ]
}
rollout_yaml() { # NAME STRATEGY(yaml, indented 4)
  cat <<EOF
apiVersion: stepwise.dev/v1alpha1
kind: Rollout
metadata: {name: $1}
spec:
  replicas: 2
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}
  strategy:
$2
EOF
}

# ---- 4. install (all namespaces) and a canary as the chart's ServiceAccount -----------------------
log "helm install $rel into $rel_ns, with the dashboard and its actions"
"$HELM" install "$rel" "$chart" -n "$rel_ns" --set dashboard.enabled=true --set dashboard.actions=true >"$out/install.log" 2>&1 \
  || { cat "$out/install.log" >&2; die "helm install failed"; }
fullname=$rel-stepwise
sa_kc=$out/sa-$rel.kubeconfig
sa_kubeconfig "$rel_ns" "$fullname" "$sa_kc"
who=$(k --kubeconfig="$sa_kc" auth whoami -o 'jsonpath={.status.userInfo.username}' 2>/dev/null || true)
if [ "$who" = "system:serviceaccount:$rel_ns:$fullname" ]; then ok "the test's kubeconfig authenticates as $who"; else bad "the test's kubeconfig is '$who'"; fi

rust_log=$(deployment_env "$rel_ns" "$fullname" RUST_LOG),stepwise_controller=debug
mapfile -t args < <(deployment_args "$rel_ns" "$fullname")
printf '%s\n' "${args[@]}" | grep -qx -- "--lease-namespace=$rel_ns" || bad "the Deployment does not elect in $rel_ns: ${args[*]}"
# The ClusterRole covers all namespaces; the process is scoped to its test namespace only so that
# it leaves the Rollouts of other tests on this control plane alone. `auth can-i -A` below checks
# the all-namespaces grant.
port=$(free_port)
start_controller cluster "$sa_kc" "$port" "${args[@]}" --namespace="$app_ns"
if wait_for "the controller to be ready (leader, caches synced)" 60 ready "$port"; then
  ok "the controller runs as the ServiceAccount: leader through the chart's Lease, caches synced"
else
  bad "the controller did not become ready"; tail -n 30 "$out/controller-cluster.log" >&2
fi
holder=$(jp "$rel_ns" "lease/$fullname" '{.spec.holderIdentity}' || true)
[ "$holder" = "helm-test-cluster-$id" ] && ok "the chart's Lease is held by the controller" || bad "the Lease's holder is '$holder'"

# The canary: a Gateway API HTTPRoute, a Job analysis whose argument comes from a Secret, a pause.
k -n "$app_ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: app-stable}
spec: {selector: {app: app}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: app-canary}
spec: {selector: {app: app}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app}
spec:
  parentRefs: [{name: gateway}]
  rules:
  - backendRefs:
    - {name: app-stable, port: 80, weight: 100}
    - {name: app-canary, port: 80, weight: 0}
---
apiVersion: v1
kind: Secret
metadata: {name: smoke}
stringData: {outcome: pass}
---
apiVersion: stepwise.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: smoke-test}
spec:
  args: [{name: outcome, valueFrom: {secretKeyRef: {name: smoke, key: outcome}}}]
  metrics:
  - name: smoke-test
    provider:
      job:
        spec:
          backoffLimit: 0
          template:
            metadata: {labels: {stepwise.dev/test-outcome: '{{args.outcome}}'}}
            spec:
              restartPolicy: Never
              containers: [{name: smoke, image: example.invalid/smoke:1}]
EOF
rollout_yaml app "    canary:
      canaryService: app-canary
      stableService: app-stable
      scaleDownDelaySeconds: 2
      trafficRouting: {gatewayAPI: {httpRoute: app}}
      steps:
      - setWeight: 50
      - analysis: {templates: [{templateName: smoke-test}]}
      - pause: {}" | k -n "$app_ns" apply -f - >/dev/null
weights() { jp "$app_ns" httproute/app '{.spec.rules[0].backendRefs[*].weight}'; }
if wait_for "the Rollout to be Healthy" 60 phase_is "$app_ns" app Healthy; then ok "the Rollout is Healthy"; else bad "the Rollout is not Healthy: $(rollout_field "$app_ns" app '{.status.message}')"; fi
k -n "$app_ns" patch rollout app --type=merge -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"example.invalid/demo:2"}]}}}}' >/dev/null
paused_at_3() { [ "$(rollout_field "$app_ns" app '{.status.currentStepIndex}')" = 2 ] && phase_is "$app_ns" app Paused; }
if wait_for "the canary to pass its analysis and pause at step 3" 90 paused_at_3; then
  ok "the canary passed setWeight and its Job analysis: $(rollout_field "$app_ns" app '{.status.message}')"
else
  bad "the canary did not reach its pause: $(rollout_field "$app_ns" app '{.status.phase}: {.status.message}')"
fi
[ "$(weights)" = "50 50" ] && ok "the HTTPRoute sends 50% to the canary" || bad "the HTTPRoute's weights are '$(weights)'"
run_phase=$(k -n "$app_ns" get analysisruns.stepwise.dev -o 'jsonpath={.items[*].status.phase}' || true)
[ "$run_phase" = Successful ] && ok "the AnalysisRun (a Job, its argument read from a Secret) is Successful" || bad "the AnalysisRun is '$run_phase'"
job=$(k -n "$app_ns" get analysisruns.stepwise.dev -o 'jsonpath={.items[0].status.metricResults[0].measurements[0].metadata.job-name}' 2>/dev/null || true)
[ -n "$job" ] && ok "the analysis ran the Job $job" || bad "the AnalysisRun names no Job"
KUBECONFIG=$KUBECONFIG "$plugin_bin" promote app -n "$app_ns" >"$out/promote.log" 2>&1 || { bad "kubectl stepwise promote failed"; cat "$out/promote.log" >&2; }
if wait_for "the canary to be promoted" 60 healthy_on_new "$app_ns" app example.invalid/demo:2; then ok "promoted: the new version is stable"; else bad "not promoted: $(rollout_field "$app_ns" app '{.status.message}')"; fi
back_on_stable() { [ "$(weights)" = "100 0" ]; }
wait_for "the HTTPRoute back on stable" 20 back_on_stable && ok "the HTTPRoute sends 100% to stable again" || bad "the HTTPRoute's weights are '$(weights)'"
# A restart: pods listed and evicted.
sleep 1
k -n "$app_ns" patch rollout app --type=merge -p "{\"spec\":{\"restartAt\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}}" >/dev/null
restarted() { [ -n "$(rollout_field "$app_ns" app '{.status.restartedAt}')" ]; }
wait_for "the restart" 90 restarted && ok "restartAt: the old pods were evicted" || bad "the restart did not finish"
events=$(k -n "$app_ns" get events.events.k8s.io -o 'jsonpath={range .items[?(@.reportingController=="stepwise-controller")]}{.reason}{"\n"}{end}' | sort -u | tr '\n' ' ')
[ -n "$events" ] && ok "the controller recorded events: $events" || bad "the controller recorded no events"
no_refusals "$out/controller-cluster.log"

# Requests outside the chart's rules are refused.
expect_can "$sa_kc" list rollouts.stepwise.dev --all-namespaces
expect_can "$sa_kc" watch clusteranalysistemplates.stepwise.dev
expect_can "$sa_kc" patch httproutes.gateway.networking.k8s.io -n "$other"
expect_cannot "$sa_kc" delete rollouts.stepwise.dev -n "$app_ns"
expect_cannot "$sa_kc" create deployments.apps -n "$app_ns"
expect_cannot "$sa_kc" list secrets -n "$app_ns"
expect_cannot "$sa_kc" create configmaps -n "$app_ns"
expect_cannot "$sa_kc" delete pods -n "$app_ns"
expect_cannot "$sa_kc" patch leases.coordination.k8s.io/kube-controller-manager -n kube-system
expect_cannot "$sa_kc" patch leases.coordination.k8s.io/other -n "$rel_ns"
expect_cannot "$sa_kc" create clusterroles.rbac.authorization.k8s.io
expect_cannot "$sa_kc" delete ingresses.networking.k8s.io -n "$app_ns"
# The metrics APIs are for the kubernetes provider only, which is off by default.
expect_metrics false "$sa_kc" "$app_ns"
# And a real request: the controller's own token may not make a ConfigMap.
if k --kubeconfig="$sa_kc" -n "$app_ns" create configmap not-allowed --from-literal=a=b >"$out/refused.log" 2>&1; then
  bad "the ServiceAccount created a ConfigMap"
elif grep -q 'is forbidden' "$out/refused.log"; then
  ok "creating a ConfigMap with the controller's token is refused: $(head -c 200 "$out/refused.log")"
else
  bad "creating a ConfigMap failed, but not with Forbidden: $(cat "$out/refused.log")"
fi

# ---- 4b. the dashboard, as its own ServiceAccount -------------------------------------------------
dash=$fullname-dashboard
grep -qF "kubectl -n $rel_ns port-forward svc/$dash 3100:3100" "$out/install.log" \
  && ok "the install's notes tell how to reach the dashboard (port-forward svc/$dash)" || bad "the install's notes name no port-forward to svc/$dash"
dash_available() { [ "$(jp "$rel_ns" "deployment/$dash" '{.status.availableReplicas}')" = 1 ]; }
wait_for "the dashboard's Deployment to be available" 60 dash_available && ok "the dashboard's Deployment is available" || bad "the dashboard's Deployment is not available"
components=$(k -n "$rel_ns" get pods -l "app.kubernetes.io/name=stepwise,app.kubernetes.io/instance=$rel" \
  -o 'jsonpath={range .items[*]}{.metadata.labels.app\.kubernetes\.io/component}{"\n"}{end}' | sort -u | tr '\n' ' ')
[ "$components" = "controller " ] && ok "the controller's selector matches no dashboard pod" || bad "the controller's selector matches pods of: $components"
dash_kc=$out/sa-$dash.kubeconfig
sa_kubeconfig "$rel_ns" "$dash" "$dash_kc"
# Its own rules: sign-in, impersonation, the reads of the page, and Events (actions are on).
expect_can "$dash_kc" create tokenreviews.authentication.k8s.io
expect_can "$dash_kc" impersonate users
expect_can "$dash_kc" impersonate groups
expect_can "$dash_kc" impersonate serviceaccounts -n "$other"
expect_review true "$dash_kc" "impersonate the uid of a token" "{verb: impersonate, group: authentication.k8s.io, resource: uids, name: 0b5e}"
expect_review true "$dash_kc" "impersonate the extra authentication.kubernetes.io/credential-id of a token" \
  "{verb: impersonate, group: authentication.k8s.io, resource: userextras, subresource: authentication.kubernetes.io/credential-id, name: JTI=1}"
for verb in get list watch; do expect_can "$dash_kc" "$verb" rollouts.stepwise.dev --all-namespaces; done
expect_can "$dash_kc" watch analysisruns.stepwise.dev --all-namespaces
expect_can "$dash_kc" watch replicasets.apps --all-namespaces
expect_can "$dash_kc" watch events --all-namespaces
expect_can "$dash_kc" create events -n "$app_ns"
# People act as themselves: the ServiceAccount itself may change no Rollout and read nothing else.
expect_cannot "$dash_kc" patch rollouts.stepwise.dev -n "$app_ns"
expect_cannot "$dash_kc" patch rollouts.stepwise.dev --subresource=status -n "$app_ns"
expect_cannot "$dash_kc" delete rollouts.stepwise.dev -n "$app_ns"
expect_cannot "$dash_kc" get secrets -n "$app_ns"
expect_cannot "$dash_kc" list pods -n "$app_ns"
expect_cannot "$dash_kc" list configmaps -n "$app_ns"
expect_cannot "$dash_kc" create events.events.k8s.io -n "$app_ns"

# The dashboard runs outside the cluster as its ServiceAccount with the Deployment's arguments
# (scoped to the test's namespace, like the controller). An operator, who may patch Rollouts in
# $app_ns, and a stranger, who may do nothing, sign in with their own tokens.
mapfile -t dash_args < <(deployment_args "$rel_ns" "$dash")
printf '%s\n' "${dash_args[@]}" | grep -qx -- --actions && ok "the dashboard's Deployment runs with ${dash_args[*]}" || bad "no --actions in ${dash_args[*]}"
k -n "$app_ns" create serviceaccount operator >/dev/null
k -n "$app_ns" create serviceaccount stranger >/dev/null
k -n "$app_ns" create role rollout-operator --verb=get,list,watch,patch --resource=rollouts.stepwise.dev,rollouts.stepwise.dev/status >/dev/null
k -n "$app_ns" create rolebinding rollout-operator --role=rollout-operator --serviceaccount="$app_ns:operator" >/dev/null
operator_token=$(k -n "$app_ns" create token operator --duration=1h)
stranger_token=$(k -n "$app_ns" create token stranger --duration=1h)
dash_port=$(free_port)
"$plugin_bin" "${dash_args[@]}" --kubeconfig="$dash_kc" --address="127.0.0.1:$dash_port" --namespace="$app_ns" \
  >"$out/dashboard.log" 2>&1 </dev/null &
dash_pid=$!
pids+=("$dash_pid")
log "started the dashboard (pid $dash_pid): ${dash_args[*]} (log: $out/dashboard.log)"
# dash_call METHOD PATH TOKEN [JSON]: a request to the dashboard by the token's person (with the
# header the page sends with actions); prints the status, a space and the body.
dash_call() {
  python3 - "http://127.0.0.1:$dash_port$2" "$1" "$3" "${4:-}" <<'PY'
import sys, urllib.request, urllib.error
url, method, token, body = sys.argv[1:5]
request = urllib.request.Request(url, data=body.encode() or None, method=method, headers={
    "Authorization": "Bearer " + token, "X-Stepwise-Action": "1", "Content-Type": "application/json"})
try:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=20) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception as e:
    print(0, e)
PY
}
if wait_for "the dashboard to be ready" 30 ready "$dash_port"; then ok "the dashboard runs as its ServiceAccount (/readyz)"; else bad "the dashboard did not become ready"; tail -n 20 "$out/dashboard.log" >&2; fi
answer=$(dash_call GET /api/rollouts "$operator_token")
case $answer in
  "200 "*"\"name\":\"app\""*) ok "the operator, signed in with their token, sees the Rollout app" ;;
  *) bad "the operator's list: $answer" ;;
esac
answer=$(dash_call GET /api/rollouts "$stranger_token")
case $answer in
  "200 "*"\"rollouts\":[]"*) ok "the stranger sees no Rollout (they may not list them in $app_ns)" ;;
  *) bad "the stranger's list: $answer" ;;
esac
# pause_as TOKEN: the pause action as the token's person, on the Rollout as it is now (the page
# sends the resourceVersion it showed); retried while the controller moves the Rollout on.
pause_as() {
  local version
  version=$(rollout_field "$app_ns" app '{.metadata.resourceVersion}')
  answer=$(dash_call POST "/api/rollouts/$app_ns/app/actions/pause" "$1" "{\"resourceVersion\":\"$version\"}")
  [ "${answer%% *}" != 409 ]
}
wait_for "the stranger's pause to be answered" 20 pause_as "$stranger_token" || true
case $answer in
  "403 "*"system:serviceaccount:$app_ns:stranger"*) ok "the stranger's pause is refused by the API server, as the stranger: $(head -c 160 <<<"$answer")" ;;
  *) bad "the stranger's pause: $answer" ;;
esac
wait_for "the operator's pause to be answered" 20 pause_as "$operator_token" || true
case $answer in
  "200 "*) ok "the operator paused the Rollout through the dashboard: $answer" ;;
  *) bad "the operator's pause: $answer" ;;
esac
[ "$(rollout_field "$app_ns" app '{.spec.paused}')" = true ] && ok "the Rollout is paused" || bad "the Rollout is not paused"
recorded=$(k -n "$app_ns" get events -o 'jsonpath={range .items[?(@.source.component=="stepwise-dashboard")]}{.reason}: {.message}{"\n"}{end}')
case $recorded in
  *"Pause: system:serviceaccount:$app_ns:operator via the dashboard"*) ok "the dashboard recorded the action as an Event naming the operator" ;;
  *) bad "no Event of the dashboard names the operator's pause: '$recorded'" ;;
esac
if grep -i 'forbidden' "$out/dashboard.log" >"$out/refusals.log"; then
  bad "requests of the dashboard were refused (a missing RBAC rule):"; head -n 20 "$out/refusals.log" >&2
else
  ok "no request of the dashboard was refused (dashboard.log)"
fi
kill -TERM "$dash_pid" && wait "$dash_pid" || true
unset 'pids[-1]' # the last one is the controller again, which step 5 stops

# ---- 5. upgrade and uninstall ----------------------------------------------------------------------
# The controller keeps running: an upgrade must not disturb the Lease it holds.
log "helm upgrade $rel: 2 replicas, no Istio, no Secrets, the kubernetes metric provider, the dashboard read-only"
"$HELM" upgrade "$rel" "$chart" -n "$rel_ns" --set replicaCount=2 --set routers.istio.enabled=false \
  --set analysis.secrets.enabled=false --set analysis.kubernetes.enabled=true \
  --set dashboard.enabled=true >"$out/upgrade.log" 2>&1 || { bad "helm upgrade failed"; cat "$out/upgrade.log" >&2; }
[ "$(jp "$rel_ns" "deployment/$fullname" '{.spec.replicas}')" = 2 ] && ok "upgrade: the Deployment has 2 replicas" || bad "upgrade: replicas not 2"
[ "$(jp "$rel_ns" "pdb/$fullname" '{.spec.maxUnavailable}')" = 1 ] && ok "upgrade: a PodDisruptionBudget came with the second replica" || bad "upgrade: no PodDisruptionBudget"
expect_cannot "$sa_kc" patch virtualservices.networking.istio.io -n "$app_ns"
expect_cannot "$sa_kc" get secrets -n "$app_ns"
expect_metrics true "$sa_kc" "$app_ns"
expect_can "$sa_kc" patch httproutes.gateway.networking.k8s.io -n "$app_ns"
# Read-only, the dashboard records nothing: no Events, but it still impersonates, to ask what
# each person may see.
jp "$rel_ns" "deployment/$dash" '{.spec.template.spec.containers[0].args}' | grep -q -- --actions \
  && bad "upgrade: the read-only dashboard still runs with --actions" || ok "upgrade: the dashboard runs without --actions"
expect_cannot "$dash_kc" create events -n "$app_ns"
expect_can "$dash_kc" impersonate users
expect_can "$dash_kc" list rollouts.stepwise.dev --all-namespaces
holder=$(jp "$rel_ns" "lease/$fullname" '{.spec.holderIdentity}' || true)
[ "$holder" = "helm-test-cluster-$id" ] && ok "upgrade: the Lease still names the running controller" || bad "upgrade: the Lease's holder is '$holder'"
ready "$port" && ok "upgrade: the controller is still the ready leader" || bad "upgrade: the controller is no longer ready"
kill -TERM "${pids[-1]}" && wait "${pids[-1]}" || true

# release_objects RELEASE: every object of any kind labelled with the release, in any namespace.
release_objects() {
  local kinds
  kinds=$(k api-resources --verbs=list -o name | grep -v '^events' | paste -sd, -)
  k get "$kinds" -A -l "app.kubernetes.io/instance=$1" -o name 2>/dev/null || true
}
before=$(release_objects "$rel" | wc -l)
"$HELM" uninstall "$rel" -n "$rel_ns" --wait >"$out/uninstall.log" 2>&1 || { bad "helm uninstall failed"; cat "$out/uninstall.log" >&2; }
left=$(release_objects "$rel")
secrets=$(k -n "$rel_ns" get secrets -l "owner=helm,name=$rel" -o name || true)
if [ -z "$left" ] && [ -z "$secrets" ] && [ "$before" -gt 0 ]; then
  ok "uninstall: none of the release's $before objects is left (nor its Helm history)"
else
  bad "uninstall left: $left $secrets (before: $before)"
fi
crds=$(k get crd -o name | grep -c 'stepwise.dev' || true)
[ "$crds" = 4 ] && ok "uninstall: the 4 CRDs are kept" || bad "uninstall: $crds stepwise CRDs left"

# ---- 6. the namespaced mode ----------------------------------------------------------------------------
log "helm install $nsrel into $nsrel_ns, watching $watched, with the dashboard (read-only)"
"$HELM" install "$nsrel" "$chart" -n "$nsrel_ns" --set watchNamespace="$watched" --set dashboard.enabled=true >"$out/install-ns.log" 2>&1 \
  || { cat "$out/install-ns.log" >&2; die "helm install (namespaced) failed"; }
nsfull=$nsrel-stepwise
ns_kc=$out/sa-$nsrel.kubeconfig
sa_kubeconfig "$nsrel_ns" "$nsfull" "$ns_kc"
rust_log=$(deployment_env "$nsrel_ns" "$nsfull" RUST_LOG),stepwise_controller=debug
mapfile -t args < <(deployment_args "$nsrel_ns" "$nsfull")
printf '%s\n' "${args[@]}" | grep -qx -- "--namespace=$watched" && ok "the namespaced Deployment runs with --namespace=$watched" || bad "no --namespace in ${args[*]}"
port=$(free_port)
start_controller namespaced "$ns_kc" "$port" "${args[@]}"
if wait_for "the namespaced controller to be ready" 60 ready "$port"; then ok "the namespaced controller is ready"; else bad "the namespaced controller did not become ready"; tail -n 30 "$out/controller-namespaced.log" >&2; fi
rollout_yaml app "    canary:
      steps:
      - setWeight: 50
      - pause: {duration: 1s}" | tee "$out/ns-rollout.yaml" | k -n "$watched" apply -f - >/dev/null
k -n "$other" apply -f "$out/ns-rollout.yaml" >/dev/null
if wait_for "the Rollout in $watched to be Healthy" 60 phase_is "$watched" app Healthy; then ok "a Rollout in the watched namespace is Healthy"; else bad "the Rollout in $watched is not Healthy"; fi
k -n "$watched" patch rollout app --type=merge -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"example.invalid/demo:2"}]}}}}' >/dev/null
if wait_for "the update in $watched" 60 healthy_on_new "$watched" app example.invalid/demo:2; then ok "a canary in the watched namespace completes"; else bad "the canary in $watched did not complete: $(rollout_field "$watched" app '{.status.message}')"; fi
[ -z "$(rollout_field "$other" app '{.status.phase}')" ] && ok "a Rollout outside the watched namespace is left alone" || bad "the Rollout in $other has a status"
no_refusals "$out/controller-namespaced.log"
expect_can "$ns_kc" patch rollouts.stepwise.dev --subresource=status -n "$watched"
expect_can "$ns_kc" list clusteranalysistemplates.stepwise.dev
expect_cannot "$ns_kc" list rollouts.stepwise.dev --all-namespaces
expect_cannot "$ns_kc" list rollouts.stepwise.dev -n "$other"
expect_cannot "$ns_kc" patch services -n "$other"
if k --kubeconfig="$ns_kc" -n "$other" get rollouts.stepwise.dev >"$out/refused-ns.log" 2>&1; then
  bad "the namespaced ServiceAccount read Rollouts in $other"
elif grep -q 'is forbidden' "$out/refused-ns.log"; then
  ok "reading Rollouts in $other with the namespaced controller's token is refused"
else
  bad "reading Rollouts in $other failed, but not with Forbidden: $(cat "$out/refused-ns.log")"
fi
# The namespaced dashboard reads the watched namespace alone, and still signs people in and
# impersonates them (cluster-wide by nature).
ns_dash_kc=$out/sa-$nsfull-dashboard.kubeconfig
sa_kubeconfig "$nsrel_ns" "$nsfull-dashboard" "$ns_dash_kc"
jp "$nsrel_ns" "deployment/$nsfull-dashboard" '{.spec.template.spec.containers[0].args}' | grep -q -- "--namespace=$watched" \
  && ok "the namespaced dashboard runs with --namespace=$watched" || bad "the namespaced dashboard runs without --namespace=$watched"
expect_can "$ns_dash_kc" watch rollouts.stepwise.dev -n "$watched"
expect_cannot "$ns_dash_kc" list rollouts.stepwise.dev -n "$other"
expect_cannot "$ns_dash_kc" list rollouts.stepwise.dev --all-namespaces
expect_cannot "$ns_dash_kc" create events -n "$watched"
expect_can "$ns_dash_kc" create tokenreviews.authentication.k8s.io
expect_can "$ns_dash_kc" impersonate users
kill -TERM "${pids[-1]}" && wait "${pids[-1]}" || true
"$HELM" uninstall "$nsrel" -n "$nsrel_ns" --wait >"$out/uninstall-ns.log" 2>&1 || bad "helm uninstall (namespaced) failed"
left=$(release_objects "$nsrel")
[ -z "$left" ] && ok "uninstall (namespaced): nothing of the release is left" || bad "uninstall (namespaced) left: $left"

log "helm-test: $passed passed, $failed failed"
[ "$failed" = 0 ]
