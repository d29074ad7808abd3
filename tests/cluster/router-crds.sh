#!/usr/bin/env bash
# Installs the real CRDs of the traffic routers stepwise drives (Istio's networking.istio.io,
# Gateway API's gateway.networking.k8s.io, standard channel, Traefik's traefik.io, SMI's
# TrafficSplit, APISIX's ApisixRoute and Emissary-ingress's Mapping) into the local control plane.
# They
# are taken from those projects' own Go modules at pinned versions, so the e2e tests run against
# the schemas users have, and cached by version under ~/.cache/stepwise/: with a warm cache this
# takes a few seconds (the apply). With --fetch-only it only fills the cache (the lab fetches outside
# its closed namespace, then applies inside it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# The module versions whose CRDs are installed. Bump them here; the cache key follows.
ISTIO_API_VERSION=v1.32.0
GATEWAY_API_VERSION=v1.6.3
TRAEFIK_VERSION=v3.7.13
SMI_SDK_VERSION=v0.5.0
APISIX_INGRESS_VERSION=v1.7.1
EMISSARY_VERSION=v3.9.1

CACHE_ROOT=${STEPWISE_CACHE:-$HOME/.cache/stepwise}
OUT=$CACHE_ROOT/router-crds-istio-$ISTIO_API_VERSION-gateway-api-$GATEWAY_API_VERSION-traefik-$TRAEFIK_VERSION-smi-$SMI_SDK_VERSION-apisix-$APISIX_INGRESS_VERSION-emissary-$EMISSARY_VERSION
STATE=${STEPWISE_CLUSTER_DIR:-$repo/target/cluster}
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=
log() { printf '[router-crds] %s\n' "$*" >&2; }
# shellcheck source=go-module.sh
. "$here/go-module.sh"

# Several test binaries may call this at once: one downloads and applies, the others wait.
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.router-crds.lock"
flock -w 1800 8 || { log "timed out waiting for $CACHE_ROOT/.router-crds.lock"; exit 1; }


if [ ! -s "$OUT/istio.yaml" ]; then
  dir=$(go_module_dir "istio.io/api@$ISTIO_API_VERSION")
  mkdir -p "$OUT"
  cp "$dir/kubernetes/customresourcedefinitions.gen.yaml" "$OUT/istio.yaml.tmp"
  mv "$OUT/istio.yaml.tmp" "$OUT/istio.yaml"
fi
if [ ! -s "$OUT/gateway-api.yaml" ]; then
  dir=$(go_module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
  mkdir -p "$OUT"
  for f in "$dir"/config/crd/standard/*.yaml; do cat "$f"; printf '\n---\n'; done >"$OUT/gateway-api.yaml.tmp"
  mv "$OUT/gateway-api.yaml.tmp" "$OUT/gateway-api.yaml"
fi

if [ ! -s "$OUT/traefik.yaml" ]; then
  dir=$(go_module_dir "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")
  mkdir -p "$OUT"
  cp "$dir/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" "$OUT/traefik.yaml.tmp"
  mv "$OUT/traefik.yaml.tmp" "$OUT/traefik.yaml"
fi

# smi-sdk-go ships its TrafficSplit CRD as apiextensions.k8s.io/v1beta1, which API servers stopped
# serving in Kubernetes 1.22. The cached copy is the same CRD as apiextensions.k8s.io/v1: its one
# schema (with the `type: object` at the root that v1 requires) given to each version, and
# v1alpha2 served beside v1alpha4, the only version the file serves: stepwise writes v1alpha2,
# the version Linkerd's SMI extension and Open Service Mesh serve (integer weights; v1alpha1 has
# quantity strings). The versions share that schema, so no conversion is needed.
if [ ! -s "$OUT/smi.yaml" ]; then
  dir=$(go_module_dir "github.com/servicemeshinterface/smi-sdk-go@$SMI_SDK_VERSION")
  mkdir -p "$OUT"
  python3 - "$dir/crds/split.yaml" >"$OUT/smi.yaml.tmp" <<'PY'
import sys
text = open(sys.argv[1]).read()
for expected in ("apiVersion: apiextensions.k8s.io/v1beta1\n", "  name: trafficsplits.split.smi-spec.io\n",
                 "  version: v1alpha4\n", "  validation:\n    openAPIV3Schema:\n      properties:\n"):
    if expected not in text:
        sys.exit(f"smi-sdk-go's split.yaml changed ({expected.strip()!r} not found): update router-crds.sh")
schema = text.split("  validation:\n    openAPIV3Schema:\n", 1)[1]
# Under versions[].schema.openAPIV3Schema, two levels deeper than under validation.
schema = "".join("  " + line if line.strip() else line for line in schema.splitlines(True))
versions = ""
for name, served, storage in (("v1alpha4", "true", "true"), ("v1alpha3", "false", "false"),
                              ("v1alpha2", "true", "false"), ("v1alpha1", "false", "false")):
    versions += f"""  - name: {name}
    served: {served}
    storage: {storage}
    additionalPrinterColumns:
    - name: Service
      type: string
      description: The apex service of this split.
      jsonPath: .spec.service
    schema:
      openAPIV3Schema:
        type: object
{schema}"""
print(f"""# smi-sdk-go's crds/split.yaml, as apiextensions.k8s.io/v1 (see tests/cluster/router-crds.sh).
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: trafficsplits.split.smi-spec.io
spec:
  group: split.smi-spec.io
  scope: Namespaced
  names:
    kind: TrafficSplit
    listKind: TrafficSplitList
    shortNames:
    - ts
    plural: trafficsplits
    singular: trafficsplit
  conversion:
    strategy: None
  versions:
{versions.rstrip()}""")
PY
  mv "$OUT/smi.yaml.tmp" "$OUT/smi.yaml"
fi

if [ ! -s "$OUT/apisix.yaml" ]; then
  dir=$(go_module_dir "github.com/apache/apisix-ingress-controller@$APISIX_INGRESS_VERSION")
  mkdir -p "$OUT"
  cp "$dir/samples/deploy/crd/v1/ApisixRoute.yaml" "$OUT/apisix.yaml.tmp"
  mv "$OUT/apisix.yaml.tmp" "$OUT/apisix.yaml"
fi

# Only the Mapping CRD of Emissary's, from manifests/emissary/emissary-crds.yaml.in, the file
# Emissary's releases publish as emissary-crds.yaml: pkg/api/getambassador.io/crds.yaml is
# controller-gen's output before Emissary makes its schemas structural (it types the branches of
# oneOf), which an API server refuses. Its spec.conversion sends every read and write of another
# version than the stored one to the emissary-apiext webhook, which runs with Emissary and not in
# the test cluster: the API server would fail those requests. The cached copy converts with
# `strategy: None` instead (the API server only relabels the apiVersion), which is faithful for
# what the tests write: stepwise reads and writes getambassador.io/v2, the storage version, and
# the tests' Mappings use only fields v2 and v3alpha1 share.
if [ ! -s "$OUT/emissary.yaml" ]; then
  dir=$(go_module_dir "github.com/emissary-ingress/emissary/v3@$EMISSARY_VERSION")
  mkdir -p "$OUT"
  python3 - "$dir/manifests/emissary/emissary-crds.yaml.in" >"$OUT/emissary.yaml.tmp" <<'PY'
import re, sys
docs = [d for d in open(sys.argv[1]).read().split("\n---\n") if "\n  name: mappings.getambassador.io\n" in d]
if len(docs) != 1:
    sys.exit("Emissary's emissary-crds.yaml.in has no single Mapping CRD: update router-crds.sh")
webhook = re.compile(r"^  conversion:\n    strategy: Webhook\n(?:    .*\n)*", re.M)
mapping, n = webhook.subn("  conversion:\n    strategy: None\n", docs[0])
if n != 1 or "clientConfig:" in mapping or "\n    storage: true\n" not in mapping:
    sys.exit("Emissary's Mapping CRD changed its conversion or versions: update router-crds.sh")
print("# Emissary's Mapping CRD with `conversion: {strategy: None}` (see tests/cluster/router-crds.sh).")
print(mapping.strip())
PY
  mv "$OUT/emissary.yaml.tmp" "$OUT/emissary.yaml"
fi

if [ "${1:-}" = --fetch-only ]; then
  log "CRDs cached in $OUT"
  exit 0
fi
[ -s "$STATE/env" ] || { log "no $STATE/env: start the local control plane first (tests/cluster/up.sh)"; exit 1; }
# shellcheck disable=SC1091
. "$STATE/env"
export KUBECONFIG
# Server-side: the Istio CRDs are too large for the last-applied annotation of a client-side apply.
for f in istio gateway-api traefik smi apisix emissary; do
  log "applying $f CRDs ($OUT/$f.yaml)"
  "$KUBECTL" apply --server-side --force-conflicts --field-manager=stepwise-router-crds -f "$OUT/$f.yaml" >/dev/null
done
"$KUBECTL" wait --for condition=established --timeout=60s \
  crd/virtualservices.networking.istio.io crd/destinationrules.networking.istio.io \
  crd/httproutes.gateway.networking.k8s.io crd/traefikservices.traefik.io \
  crd/trafficsplits.split.smi-spec.io crd/apisixroutes.apisix.apache.org crd/mappings.getambassador.io >/dev/null
log "Istio $ISTIO_API_VERSION, Gateway API $GATEWAY_API_VERSION, Traefik $TRAEFIK_VERSION, SMI $SMI_SDK_VERSION, APISIX $APISIX_INGRESS_VERSION and Emissary $EMISSARY_VERSION CRDs are served"
