{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "modelfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release full name; leaves room for the -resources/-kopf/-jobs suffixes of the RBAC objects. */}}
{{- define "modelfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modelfleet.labels" -}}
helm.sh/chart: {{ include "modelfleet.chart" . }}
{{ include "modelfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modelfleet
{{- end }}

{{- define "modelfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelfleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Rule lists, kept equal to operator/rbac.py by tests/chart/test_rbac.py. */}}
{{- define "modelfleet.rules.core" -}}
# CORE_RULES
- apiGroups: ["modelfleet.dev"]
  resources: ["modeltemplates", "modelinstances", "trainingruns"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["modelfleet.dev"]
  resources: ["trainingruns"]
  verbs: ["create", "delete"]
- apiGroups: ["modelfleet.dev"]
  resources: ["modeltemplates/status", "modelinstances/status", "trainingruns/status"]
  verbs: ["get", "patch"]
- apiGroups: ["modelfleet.dev"]
  resources: ["modelinstances/finalizers"]
  verbs: ["update"]
{{- end }}

{{- define "modelfleet.rules.events" -}}
# EVENT_RULES
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{- define "modelfleet.rules.jobs" -}}
{{- if eq .Values.operator.scheduler "kubernetes" }}
# SCHEDULER_RULES["kubernetes"]
- apiGroups: ["batch.volcano.sh"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- else if eq .Values.operator.scheduler "kueue" }}
# SCHEDULER_RULES["kueue"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "watch"]
{{- else }}
{{- fail (printf "operator.scheduler=%q: the chart deploys kubernetes or kueue" .Values.operator.scheduler) }}
{{- end }}
{{- end }}
