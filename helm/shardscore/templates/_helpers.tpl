{{/* Names, labels and small shared pieces. */}}

{{- define "shardscore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name, at most 38 characters: KubeRay limits RayJob names to 47 characters and scheduled RayJobs are named
<fullname>-<unix minutes> (8 digits); RayCluster names to 53. Must be a DNS-1035 label (checked in validate.yaml).
*/}}
{{- define "shardscore.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 38 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 38 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 38 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shardscore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shardscore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shardscore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels; call with (dict "root" $ "component" "raycluster"). */}}
{{- define "shardscore.labels" -}}
{{- $root := .root -}}
helm.sh/chart: {{ include "shardscore.chart" $root }}
{{ include "shardscore.selectorLabels" $root }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: shardscore
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* metadata.labels + metadata.annotations; call with (dict "root" $ "component" C "labels" L "annotations" A). */}}
{{- define "shardscore.metadata" -}}
labels:
  {{- include "shardscore.labels" . | nindent 2 }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $ann := merge (dict) (.annotations | default dict) (.root.Values.commonAnnotations | default dict) }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "shardscore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shardscore.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "shardscore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the RayCluster a RayJob runs on (clusterSelector mode). */}}
{{- define "shardscore.targetClusterName" -}}
{{- default (include "shardscore.fullname" .) .Values.rayJob.clusterName }}
{{- end }}

{{- define "shardscore.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
