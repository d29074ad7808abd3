{{/* The chart name. */}}
{{- define "stepwise.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects. */}}
{{- define "stepwise.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of cluster-scoped objects: the full name qualified by the release namespace, so
two releases of the same name in two namespaces do not collide. */}}
{{- define "stepwise.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "stepwise.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "stepwise.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "stepwise.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: stepwise
{{- end }}

{{/* Labels that select the controller pods. */}}
{{- define "stepwise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stepwise.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/* The ServiceAccount the controller runs as. */}}
{{- define "stepwise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stepwise.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Lease of leader election. */}}
{{- define "stepwise.leaseName" -}}
{{- default (include "stepwise.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The image reference. */}}
{{- define "stepwise.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The rules the controller needs in the namespaces it watches, derived from the API calls in
crates/stepwise-controller (run.rs, reconcile.rs, execute.rs, route.rs, analysis.rs) and
crates/stepwise-metrics/src/job.rs. charts/stepwise/README.md explains each one.
*/}}
{{- define "stepwise.rules" -}}
# Rollouts: the cache (list, watch), defaulting spec.replicas and the traffic finalizer of routed
# Rollouts (patch), the status subresource.
- apiGroups: [stepwise.dev]
  resources: [rollouts]
  verbs: [list, watch, patch]
- apiGroups: [stepwise.dev]
  resources: [rollouts/status]
  verbs: [patch]
# AnalysisRuns: the cache, creating a step's runs, terminating them (spec.terminate), and their
# status, which the AnalysisRun controller writes.
- apiGroups: [stepwise.dev]
  resources: [analysisruns]
  verbs: [list, watch, create, patch]
- apiGroups: [stepwise.dev]
  resources: [analysisruns/status]
  verbs: [patch]
# ReplicaSets and AnalysisRuns (and the Jobs of analysis) carry an owner reference with
# blockOwnerDeletion to their Rollout (or run); where the OwnerReferencesPermissionEnforcement
# admission plugin is on, that needs update on the owner's finalizers.
- apiGroups: [stepwise.dev]
  resources: [rollouts/finalizers, analysisruns/finalizers]
  verbs: [update]
- apiGroups: [stepwise.dev]
  resources: [analysistemplates]
  verbs: [list, watch]
# ReplicaSets: the cache, create (get after a 409), scale and annotate (patch), delete old ones.
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list, watch, get, create, patch, delete]
# Deployments named by spec.workloadRef: the template, and their replicas (workloadRef.scaleDown).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, patch]
# Services: the cache, and the selectors of the canary, stable, active and preview Services.
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, patch]
# spec.restartAt: the pods created before it are listed and evicted. Role metadata
# (canaryMetadata, activeMetadata, ...): the pods of a version are listed and their labels and
# annotations patched in place.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, patch]
- apiGroups: [""]
  resources: [pods/eviction]
  verbs: [create]
# Events on Rollouts and AnalysisRuns (kube-rs's Recorder: events.k8s.io/v1; a repeat patches
# the event's series).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.analysis.job.enabled }}
# The job metric provider: its Jobs (create, get, delete) and the AnalysisRun controller's watch
# of the Jobs it owns.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, get, create, delete]
{{- end }}
{{- if .Values.analysis.kubernetes.enabled }}
# The kubernetes metric provider: values from the custom and external metrics APIs.
- apiGroups: [custom.metrics.k8s.io, external.metrics.k8s.io]
  resources: ["*"]
  verbs: [get]
{{- end }}
{{- if .Values.analysis.secrets.enabled }}
# Analysis arguments with valueFrom.secretKeyRef.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- if .Values.routers.istio.enabled }}
# trafficRouting.istio: the weights and managed routes of the VirtualServices (read, then a JSON
# patch) and, for subset-level splitting, the subsets' pod-template-hash labels.
- apiGroups: [networking.istio.io]
  resources: [virtualservices, destinationrules]
  verbs: [get, patch]
{{- end }}
{{- if .Values.routers.nginx.enabled }}
# trafficRouting.nginx: the stable Ingresses are read; the canary Ingress beside each is
# server-side applied (patch), which creates it the first time (create).
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, create, patch]
{{- end }}
{{- if .Values.routers.traefik.enabled }}
# trafficRouting.traefik: the weights of the weighted TraefikService.
- apiGroups: [traefik.io]
  resources: [traefikservices]
  verbs: [get, patch]
{{- end }}
{{- if .Values.routers.gatewayAPI.enabled }}
# trafficRouting.gatewayAPI: the weights of the HTTPRoutes' backendRefs and the header and mirror
# rules.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes, grpcroutes, tcproutes]
  verbs: [get, patch]
{{- end }}
{{- if .Values.routers.smi.enabled }}
# trafficRouting.smi: the Rollout is read as the router's object (get), and the TrafficSplit it
# owns is server-side applied (patch), which creates it the first time (create).
- apiGroups: [stepwise.dev]
  resources: [rollouts]
  verbs: [get]
- apiGroups: [split.smi-spec.io]
  resources: [trafficsplits]
  verbs: [get, create, patch]
{{- end }}
{{- if .Values.routers.apisix.enabled }}
# trafficRouting.apisix: the weights of the ApisixRoutes' backends.
- apiGroups: [apisix.apache.org]
  resources: [apisixroutes]
  verbs: [get, patch]
{{- end }}
{{- if .Values.routers.ambassador.enabled }}
# trafficRouting.ambassador: the Mappings are read; the canary Mapping beside each is server-side
# applied (patch), which creates it the first time (create).
- apiGroups: [getambassador.io]
  resources: [mappings]
  verbs: [get, create, patch]
{{- end }}
{{- if .Values.notifications.selfService }}
# notifications.selfService: each namespace's own notifications ConfigMap and Secret, these two
# names only, read at each send.
- apiGroups: [""]
  resources: [configmaps]
  resourceNames: [stepwise-notification-configmap]
  verbs: [get]
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [stepwise-notification-secret]
  verbs: [get]
{{- end }}
{{- with .Values.rbac.extraRules }}
# rbac.extraRules: the objects of routers registered at start in a controller binary of your own.
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The name of the dashboard's objects (its ServiceAccount, Deployment, Service, Role). */}}
{{- define "stepwise.dashboardName" -}}
{{- printf "%s-dashboard" (include "stepwise.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of the dashboard's cluster-scoped objects. */}}
{{- define "stepwise.dashboardClusterName" -}}
{{- printf "%s-dashboard" (include "stepwise.clusterName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of the dashboard's objects. Its name label is its own, so that no selector of the
controller (its Deployment, the metrics Service, the PodDisruptionBudget) matches its pods. */}}
{{- define "stepwise.dashboardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "stepwise.dashboardSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: dashboard
app.kubernetes.io/part-of: stepwise
{{- end }}

{{/* Labels that select the dashboard pods. */}}
{{- define "stepwise.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-dashboard" (include "stepwise.name" .) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/*
The dashboard's rules in the namespaces it shows, derived from the API calls in
crates/kubectl-stepwise/src/server (store.rs, actions.rs). Nothing here lets it change a Rollout:
people act as themselves (the rules of stepwise.dashboardIdentityRules).
*/}}
{{- define "stepwise.dashboardRules" -}}
# The page's one set of watches (store.rs): Rollouts, the AnalysisRuns and ReplicaSets they own,
# and the Events about them. get: the Rollout an action's Event is about (its uid).
- apiGroups: [stepwise.dev]
  resources: [rollouts, analysisruns]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [get, list, watch]
{{- if .Values.dashboard.actions }}
# The record of each action: a core/v1 Event on the Rollout naming the person, written as the
# dashboard itself (a person may be allowed to patch Rollouts but not to create Events).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
{{- end }}

{{/*
The dashboard's cluster-wide rules, in every mode: who a person is, and acting as them. Users,
groups and the extras and uid of a token are not namespaced, so only a ClusterRole grants them.
*/}}
{{- define "stepwise.dashboardIdentityRules" -}}
# Sign-in: a TokenReview tells whose a bearer token is (auth.rs).
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
# Acting as that person: every request made for them (their SelfSubjectAccessReviews, which
# decide the namespaces they see and the buttons they may press, and their actions) carries their
# user, groups, uid and extras as impersonation headers, so that Kubernetes RBAC decides what they
# may do, and the dashboard's own rules above never stand in for theirs.
- apiGroups: [""]
  resources: [users, groups, serviceaccounts]
  verbs: [impersonate]
# The uid and the extras of their token (a ServiceAccount token carries
# authentication.kubernetes.io/credential-id, pod-name, ...; OIDC tokens others). An extra is
# checked as userextras/<key>, and RBAC's only wildcards are "*" and "*/<subresource>" (a rule
# "userextras/*" matches the key "*" alone), so "*": in this group that grants impersonating
# uids and every extra, and nothing else (impersonate means nothing to tokenreviews).
- apiGroups: [authentication.k8s.io]
  resources: ["*"]
  verbs: [impersonate]
{{- end }}
