#!/usr/bin/env bash
# The image (scripts/image.sh) run by podman against the local control plane. `just image-test`
# runs it; it starts the control plane itself (tests/cluster/up.sh, which honours
# STEPWISE_CLUSTER_DIR) once the image is built, so that the control plane does not idle through
# the build.
#
#  1. scripts/image.sh builds the image (profile: STEPWISE_IMAGE_PROFILE, dev by default: the
#     release build is the same code, optimised, and takes much longer; docs/install.md) and
#     pushes it to an OCI archive; its size is printed;
#  2. the image holds the two binaries and the CA bundle, nothing else (no shell), with the user,
#     port, entry point and labels of the Dockerfile;
#  3. `podman run IMAGE --version` names the chart's appVersion, and /kubectl-stepwise runs from it;
#  4. helm install with image.repository/image.tag naming that image: the rendered Deployment runs
#     exactly it;
#  5. podman runs the image as a pod of that Deployment would: the Deployment's args and
#     security context, the chart's ServiceAccount token mounted where a pod has it, host network
#     with its metrics on 127.0.0.1. It takes the chart's Lease and walks a canary (setWeight 50,
#     pause, promoted by /kubectl-stepwise from the image) to Healthy on the new version;
#  6. the container is stopped (SIGTERM) and releases the Lease.
#
# Prints "image-test: N passed, M failed" last and exits non-zero if anything failed. Logs:
# target/image-test/.
#
# `tests/image/test.sh --build-only` builds the image and stops: `just test` runs that as a
# recipe of its own (image-test-build) at the lowest CPU priority, and the test itself, whose
# control plane must not starve, at a normal one; the test's build is then a no-op.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
chart=$repo/charts/stepwise
state=${STEPWISE_CLUSTER_DIR:-$repo/target/cluster}
out=$repo/target/image-test
profile=${STEPWISE_IMAGE_PROFILE:-dev}
# A tag of its own: the test's dev build must not replace the release image of `just image`.
repository=localhost/stepwise-controller
tag=test-$profile
image=$repository:$tag
if [ "${1:-}" = --build-only ]; then
  "$repo/scripts/image.sh" --profile "$profile" --image "$image" >/dev/null
  exit 0
fi
rm -rf -- "$out"
mkdir -p "$out"
# shellcheck source=../../scripts/containers.sh
. "$repo/scripts/containers.sh"
containers_env # podman with the project's settings and image store, as scripts/image.sh

log() { printf '[image-test] %s\n' "$*" >&2; }
die() { printf '[image-test] ERROR: %s\n' "$*" >&2; exit 1; }
passed=0
failed=0
ok() { passed=$((passed + 1)); log "PASS: $*"; }
bad() { failed=$((failed + 1)); log "FAIL: $*"; }

id=$(printf '%x' "$(( $(date +%s%N) / 1000 % 0xffffff ))")
rel=swimg$id
rel_ns=image-$id-system
app_ns=image-$id-app
container=stepwise-image-test-$id
identity=$rel-stepwise-podman-$id # what the pod's name would be
cluster_ready=0

cleanup() {
  if podman container exists "$container" 2>/dev/null; then
    podman logs "$container" >"$out/controller.log" 2>&1 || true
    podman rm -f -t 10 "$container" >/dev/null 2>&1 || true
  fi
  podman rm -f "$container-files" >/dev/null 2>&1 || true
  rm -rf -- "$out/secrets"
  if [ "$cluster_ready" = 1 ]; then
    "$HELM" uninstall "$rel" -n "$rel_ns" --wait=false >/dev/null 2>&1 || true
    k delete namespace "$rel_ns" "$app_ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
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

# ---- 1. build -----------------------------------------------------------------------------------
started=$SECONDS
built=$("$repo/scripts/image.sh" --profile "$profile" --image "$image" --push "oci-archive:$out/image.tar:$image" 2>"$out/build.log") ||
  { tail -n 40 "$out/build.log" >&2; die "scripts/image.sh failed (log: $out/build.log)"; }
grep '^\[image\]' "$out/build.log" >&2 || true
[ "$built" = "$image" ] && ok "scripts/image.sh built $built in $((SECONDS - started)) s" || bad "scripts/image.sh printed '$built', not $image"
bytes=$(podman image inspect --format '{{.Size}}' "$image")
log "image size: $(awk -v b="$bytes" 'BEGIN {printf "%.1f MB", b / 1e6}') ($bytes bytes, $profile build)"
if [ -s "$out/image.tar" ] && tar -xOf "$out/image.tar" index.json | grep -q "$image"; then
  ok "scripts/image.sh --push wrote an OCI archive naming $image ($(du -m "$out/image.tar" | cut -f1) MB)"
else
  bad "scripts/image.sh --push wrote no OCI archive naming $image"
fi

# ---- 2. what the image holds ----------------------------------------------------------------------
config() { podman image inspect --format "$1" "$image"; }
appversion=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart/Chart.yaml")
[ "$(config '{{.Config.User}}')" = 65532:65532 ] && ok "user 65532:65532" || bad "user is '$(config '{{.Config.User}}')'"
[ "$(config '{{json .Config.Entrypoint}}')" = '["/stepwise-controller"]' ] && ok "entry point /stepwise-controller" || bad "entry point is $(config '{{json .Config.Entrypoint}}')"
config '{{json .Config.ExposedPorts}}' | grep -q '"8090/tcp"' && ok "exposes 8090/tcp" || bad "ports: $(config '{{json .Config.ExposedPorts}}')"
label() { config "{{index .Config.Labels \"org.opencontainers.image.$1\"}}"; }
[ "$(label version)" = "$appversion" ] && ok "label version=$appversion" || bad "label version is '$(label version)', the chart's appVersion $appversion"
[ "$(label revision)" = "$(git -C "$repo" rev-parse HEAD)" ] || [ "$(label revision)" = "$(git -C "$repo" rev-parse HEAD)-dirty" ] &&
  ok "label revision=$(label revision)" || bad "label revision is '$(label revision)'"
# The files: a container created (not started) and exported.
podman create --name "$container-files" "$image" >/dev/null
files=$(podman export "$container-files" | tar -t | grep -v '/$' | sort | tr '\n' ' ')
podman rm "$container-files" >/dev/null
want="etc/ssl/certs/ca-certificates.crt kubectl-stepwise stepwise-controller "
[ "$files" = "$want" ] && ok "the image holds only: $files" || bad "the image holds: $files (expected: $want)"

# ---- 3. --version, and the plugin -------------------------------------------------------------------
run() { podman run --rm --network host "$@"; }
v=$(run "$image" --version 2>&1 || true)
log "podman run $image --version: $v"
[ "$v" = "stepwise-controller $appversion" ] && ok "podman run --version: $v" || bad "podman run --version printed '$v'"
v=$(run --entrypoint /kubectl-stepwise "$image" --version 2>&1 || true)
[ "$v" = "kubectl stepwise $appversion" ] && ok "podman run --entrypoint /kubectl-stepwise: $v" || bad "/kubectl-stepwise --version printed '$v'"

# ---- 4. the chart, with this image ------------------------------------------------------------------
log "starting the local control plane ($state)"
"$repo/tests/cluster/up.sh" >"$out/cluster-up.log" 2>&1 || { cat "$out/cluster-up.log" >&2; die "tests/cluster/up.sh failed"; }
KUBECONFIG=$(sed -n 's/^KUBECONFIG=//p' "$state/env")
KUBECTL=$(sed -n 's/^KUBECTL=//p' "$state/env")
API_SERVER=$(sed -n 's/^API_SERVER=//p' "$state/env")
export KUBECONFIG
HELM=$("$repo/scripts/helm.sh")
k() { "$KUBECTL" "$@"; }
jp() { k -n "$1" get "$2" -o "jsonpath=$3" 2>/dev/null; }
cluster_ready=1
k create namespace "$rel_ns" >/dev/null
k create namespace "$app_ns" >/dev/null

log "helm install $rel into $rel_ns with image $repository:$tag"
"$HELM" install "$rel" "$chart" -n "$rel_ns" --set "image.repository=$repository" --set "image.tag=$tag" \
  >"$out/install.log" 2>&1 || { cat "$out/install.log" >&2; die "helm install failed"; }
fullname=$rel-stepwise
deployed=$(jp "$rel_ns" "deployment/$fullname" '{.spec.template.spec.containers[0].image}')
[ "$deployed" = "$image" ] && ok "the chart's Deployment runs $deployed" || bad "the chart's Deployment runs '$deployed', not $image"

# ---- 5. the image as a pod of that Deployment --------------------------------------------------------
# pod_spec: from the Deployment, one line each: "arg A" (its args without --metrics-addr, whose
# 0.0.0.0 becomes a loopback port here), "env NAME=VALUE" (the literal ones), and "flag F", the
# podman flags of its security context. An unknown security setting fails: the run would not be
# the pod's.
pod_spec() {
  k -n "$rel_ns" get deployment "$fullname" -o json | python3 -c '
import json, sys
pod = json.load(sys.stdin)["spec"]["template"]["spec"]
c = pod["containers"][0]
for a in c["args"]:
    if not a.startswith("--metrics-addr"):
        print("arg", a)
for e in c.get("env", []):
    if "value" in e:
        print("env", e["name"] + "=" + e["value"])
psc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
merged = {**psc, **sc}
user, group = merged.pop("runAsUser"), merged.pop("runAsGroup")
print("flag", f"--user={user}:{group}")
assert merged.pop("runAsNonRoot") is True and user != 0, "runAsNonRoot"
if merged.pop("readOnlyRootFilesystem", False):
    print("flag --read-only"); print("flag --read-only-tmpfs=false")  # no tmpfs on /tmp, like a pod
if merged.pop("allowPrivilegeEscalation", True) is False:
    print("flag --security-opt=no-new-privileges")
caps = merged.pop("capabilities", {})
assert caps.pop("drop", None) == ["ALL"] and not caps, f"capabilities {caps}"
print("flag --cap-drop=all")
# podman applies its default seccomp profile, the RuntimeDefault of a container runtime.
assert merged.pop("seccompProfile") == {"type": "RuntimeDefault"}, "seccompProfile"
assert not merged, f"security settings this test does not map to podman: {merged}"
'
}
if ! pod_spec >"$out/pod-spec.txt" 2>"$out/pod-spec.log"; then
  cat "$out/pod-spec.log" >&2
  die "could not map the Deployment to a podman run"
fi
mapfile -t args < <(sed -n 's/^arg //p' "$out/pod-spec.txt")
mapfile -t env < <(sed -n 's/^env //p' "$out/pod-spec.txt")
mapfile -t flags < <(sed -n 's/^flag //p' "$out/pod-spec.txt")
log "the Deployment's security context as podman flags: ${flags[*]}"

# The ServiceAccount's credentials where a pod finds them (a TokenRequest token, the CA, the
# namespace), readable by the container's user only; the controller reads them as in a pod (no
# --kubeconfig) and reaches the API server through KUBERNETES_SERVICE_HOST/PORT, 127.0.0.1 here.
secrets=$out/secrets
mkdir -m 700 "$secrets" "$secrets/sa" "$secrets/admin"
(
  umask 077
  k create token "$fullname" -n "$rel_ns" --duration=1h >"$secrets/sa/token"
  k config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$secrets/sa/ca.crt"
  printf '%s' "$rel_ns" >"$secrets/sa/namespace"
  # The plugin runs as a user of the cluster would: the admin kubeconfig.
  cp "$KUBECONFIG" "$secrets/admin/kubeconfig"
)
user=$(sed -n 's/^flag --user=//p' "$out/pod-spec.txt") # UID:GID
chown -R "$user" "$secrets/sa" "$secrets/admin/kubeconfig"
api_port=${API_SERVER##*:}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
env_flags=()
for e in "${env[@]}"; do env_flags+=(-e "$e"); done
# --namespace: the ClusterRole covers every namespace; the process is scoped to its test
# namespace so that it leaves alone the Rollouts of other tests sharing this control plane.
log "podman run $image as $identity: ${args[*]} --namespace=$app_ns --metrics-addr=127.0.0.1:$port"
podman run -d --name "$container" --network host "${flags[@]}" \
  -v "$secrets/sa:/var/run/secrets/kubernetes.io/serviceaccount:ro" \
  -e KUBERNETES_SERVICE_HOST=127.0.0.1 -e "KUBERNETES_SERVICE_PORT=$api_port" \
  "${env_flags[@]}" -e "STEPWISE_IDENTITY=$identity" \
  "$image" "${args[@]}" --namespace="$app_ns" --metrics-addr="127.0.0.1:$port" >/dev/null

http_code() { python3 -c '
import sys, urllib.request, urllib.error
try:
    print(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)' "$1"; }
ready() { [ "$(http_code "http://127.0.0.1:$port/readyz")" = 200 ]; }
if wait_for "the controller in the container to be ready" 60 ready; then
  ok "the controller in the container is ready (leader, caches synced) on 127.0.0.1:$port"
else
  bad "the controller in the container did not become ready"; podman logs "$container" 2>&1 | tail -n 30 >&2
fi
ids=$(podman top "$container" user group 2>/dev/null | sed -n 2p | awk '{print $1 ":" $2}' || true)
[ "$ids" = "$user" ] && ok "the process runs as user:group $ids" || bad "the process runs as '$ids', not $user"
holder=$(jp "$rel_ns" "lease/$fullname" '{.spec.holderIdentity}' || true)
[ "$holder" = "$identity" ] && ok "the chart's Lease is held by the container ($holder)" || bad "the Lease's holder is '$holder'"

# plugin ARGS...: /kubectl-stepwise from the image, with the admin kubeconfig.
plugin() {
  run --user "$user" -v "$secrets/admin/kubeconfig:/kubeconfig:ro" --entrypoint /kubectl-stepwise "$image" --kubeconfig=/kubeconfig "$@"
}
plugin version --controller-lease="$rel_ns/$fullname" >"$out/plugin-version.txt" 2>&1 || true
sed 's/^/  /' "$out/plugin-version.txt" >&2
if grep -qx "client: kubectl-stepwise $appversion (API stepwise.dev/v1alpha1)" "$out/plugin-version.txt" &&
  grep -q "^controller: $appversion (leader $identity, Lease $rel_ns/$fullname" "$out/plugin-version.txt"; then
  ok "/kubectl-stepwise version from the image reads the cluster and names the container as the leader"
else
  bad "/kubectl-stepwise version from the image: $(tr '\n' ' ' <"$out/plugin-version.txt")"
fi

rollout_field() { jp "$app_ns" rollout.stepwise.dev/app "$1"; }
phase_is() { [ "$(rollout_field '{.status.phase}')" = "$1" ]; }
healthy_on() {
  phase_is Healthy && [ -n "$(rollout_field '{.status.stableRS}')" ] &&
    [ "$(rollout_field '{.status.stableRS}')" = "$(rollout_field '{.status.currentPodHash}')" ] &&
    [ "$(rollout_field '{.spec.template.spec.containers[0].image}')" = "$1" ]
}
replicasets() { k -n "$app_ns" get replicasets -l app=app -o 'jsonpath={range .items[*]}{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}={.spec.template.spec.containers[0].image}:{.spec.replicas}{"\n"}{end}' | sort; }
k -n "$app_ns" apply -f - >/dev/null <<EOF
apiVersion: stepwise.dev/v1alpha1
kind: Rollout
metadata: {name: app}
spec:
  replicas: 2
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}
  strategy:
    canary:
      steps:
      - setWeight: 50
      - pause: {}
EOF
if wait_for "the Rollout to be Healthy" 60 healthy_on example.invalid/demo:1; then
  ok "the Rollout is Healthy: ReplicaSets $(replicasets | tr '\n' ' ')"
else
  bad "the Rollout is not Healthy: $(rollout_field '{.status.phase}: {.status.message}')"
fi
k -n "$app_ns" patch rollout.stepwise.dev app --type=merge \
  -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"example.invalid/demo:2"}]}}}}' >/dev/null
paused() { phase_is Paused && [ "$(rollout_field '{.status.currentStepIndex}')" = 1 ]; }
canary_rs() { [ "$(replicasets | tr '\n' ' ')" = "Rollout/app=example.invalid/demo:1:1 Rollout/app=example.invalid/demo:2:1 " ]; }
if wait_for "the canary to pause at step 2" 60 paused && wait_for "the canary's ReplicaSets" 30 canary_rs; then
  ok "the canary is Paused at step 2 with 50%: ReplicaSets $(replicasets | tr '\n' ' ')"
else
  bad "the canary did not pause at 50%: $(rollout_field '{.status.phase}: {.status.message}'); ReplicaSets $(replicasets | tr '\n' ' ')"
fi
plugin promote app -n "$app_ns" >"$out/promote.log" 2>&1 &&
  ok "promoted by /kubectl-stepwise from the image: $(head -n1 "$out/promote.log")" || { bad "/kubectl-stepwise promote failed"; cat "$out/promote.log" >&2; }
if wait_for "the new version to be stable" 60 healthy_on example.invalid/demo:2; then
  ok "the Rollout is Healthy on example.invalid/demo:2: $(rollout_field '{.status.message}')"
else
  bad "the Rollout is not Healthy on the new version: $(rollout_field '{.status.phase}: {.status.message}')"
fi
new_rs() { replicasets | grep -qx "Rollout/app=example.invalid/demo:2:2"; }
wait_for "the new ReplicaSet at 2 replicas" 30 new_rs && ok "the new ReplicaSet has the 2 replicas" || bad "ReplicaSets: $(replicasets | tr '\n' ' ')"
# Every event about the Rollout came from the controller in the container.
instances=$(k -n "$app_ns" get events.events.k8s.io -o 'jsonpath={range .items[?(@.reportingController=="stepwise-controller")]}{.reportingInstance}{"\n"}{end}' | sort -u | tr '\n' ' ')
[ "$instances" = "$identity " ] && ok "the controller's events were all reported by $identity" || bad "the controller's events were reported by '$instances'"
if podman logs "$container" 2>&1 | grep -i forbidden >"$out/refusals.log"; then
  bad "requests of the controller were refused:"; head -n 10 "$out/refusals.log" >&2
else
  ok "no request of the controller in the container was refused"
fi

# ---- 6. stop -------------------------------------------------------------------------------------------
podman stop -t 20 "$container" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
[ "$code" = 0 ] && ok "podman stop: the controller exited 0 on SIGTERM" || bad "podman stop: the controller exited $code"
holder=$(jp "$rel_ns" "lease/$fullname" '{.spec.holderIdentity}' || true)
[ "$holder" != "$identity" ] && ok "the Lease was released on stop (holder now '$holder')" || bad "the Lease is still held by $holder"

log "image-test: $passed passed, $failed failed"
[ "$failed" = 0 ]
