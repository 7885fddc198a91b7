{{/* Chart name, overridable. */}}
{{- define "zmo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix of every resource. */}}
{{- define "zmo.fullname" -}}
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

{{- define "zmo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "zmo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zmo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "zmo.labels" -}}
helm.sh/chart: {{ include "zmo.chart" . }}
{{ include "zmo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "zmo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zmo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "zmo.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the operator runs with --leader-elect: more than one replica,
leaderElection.enabled, or shards (each shard always has its own Lease, so that a rolling update
never runs two processes on one shard's objects). */}}
{{- define "zmo.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) .Values.shards }}true{{ end }}
{{- end }}

{{/* Name of the leader-election Lease (one per release, or one per shard). */}}
{{- define "zmo.leaseName" -}}
{{- include "zmo.fullname" . }}
{{- end }}

{{/* The operator Deployments: one for all objects, or one per shard (`shards`), each as a dict
with `name` (Deployment and Lease name), `shard`, `selector` and `replicas`. */}}
{{- define "zmo.instances" -}}
{{- $fullname := include "zmo.fullname" . }}
{{- $list := list }}
{{- if .Values.shards }}
{{- range .Values.shards }}
{{- $list = append $list (dict "name" (printf "%s-%s" $fullname .name | trunc 63 | trimSuffix "-") "shard" .name "selector" .selector "replicas" (int (default $.Values.replicaCount .replicaCount))) }}
{{- end }}
{{- else }}
{{- $list = append $list (dict "name" $fullname "shard" "" "selector" "" "replicas" (int .Values.replicaCount)) }}
{{- end }}
{{- toJson $list }}
{{- end }}

{{/* Namespace of the token Secret read through the API (mode 1). */}}
{{- define "zmo.tokenSecretNamespace" -}}
{{- default .Release.Namespace .Values.zitadel.tokenSecret.namespace }}
{{- end }}

{{/* Fails on values that cannot work together. */}}
{{- define "zmo.validate" -}}
{{- if and .Values.zitadel.tokenSecret.name .Values.zitadel.existingSecret.name }}
{{- fail "set at most one of zitadel.tokenSecret.name (read through the API) and zitadel.existingSecret.name (mounted as a file)" }}
{{- end }}
{{- $token := or .Values.zitadel.tokenSecret.name .Values.zitadel.existingSecret.name }}
{{- if and .Values.zitadel.url (not $token) }}
{{- fail "zitadel.url needs a token source: set zitadel.tokenSecret.name or zitadel.existingSecret.name (or leave zitadel.url empty for multi-tenant mode)" }}
{{- end }}
{{- if and $token (not .Values.zitadel.url) }}
{{- fail "a token source needs zitadel.url (the default connection's ZITADEL instance)" }}
{{- end }}
{{- $names := list }}
{{- range .Values.shards }}
{{- if has .name $names }}
{{- fail (printf "shards: the name %q is used twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.service.enabled" }}
{{- end }}
{{- end }}

{{/* The RBAC rules in every watched scope: the custom resources and their status, Events, the
Secrets/ConfigMaps that `valueFrom` and connections read (watched as metadata only, values read on
reconcile), and `patch` on Secrets/ConfigMaps and connections for the operator's finalizers only
(RBAC cannot narrow a verb to a field: the chart's ValidatingAdmissionPolicy does, see
admission-policy.yaml). */}}
{{- define "zmo.resourceRules" -}}
- apiGroups: ["metadata.zitadel-operator.dev"]
  resources: ["orgmetadatas", "usermetadatas"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["metadata.zitadel-operator.dev"]
  resources: ["orgmetadatas/status", "usermetadatas/status"]
  verbs: ["patch", "update"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["patch"]
- apiGroups: ["metadata.zitadel-operator.dev"]
  resources: ["zitadelconnections"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["metadata.zitadel-operator.dev"]
  resources: ["zitadelconnections/status"]
  verbs: ["patch"]
{{- end }}

{{/* Cluster-scoped objects: ClusterZitadelConnections and the namespaces their guards match. */}}
{{- define "zmo.clusterScopedRules" -}}
- apiGroups: ["metadata.zitadel-operator.dev"]
  resources: ["clusterzitadelconnections"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["metadata.zitadel-operator.dev"]
  resources: ["clusterzitadelconnections/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}

{{/* The ServiceAccount's user name, as the API server sees it. */}}
{{- define "zmo.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "zmo.serviceAccountName" .) }}
{{- end }}

{{/* CEL: `field` of `obj` is unchanged from `oldObject` (set in both and equal, or in neither). */}}
{{- define "zmo.unchanged" -}}
{{- printf "(has(object.%s) == has(oldObject.%s) && (!has(object.%s) || object.%s == oldObject.%s))" . . . . . }}
{{- end }}
