{{/* Names, labels, resolved defaults and small shared pieces. */}}

{{- define "shardscore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name, at most 36 characters: KubeRay v1.7.0 limits RayCronJob names to 36 (MaxRayCronJobNameLength in
utils/constant.go, so that <name>-<up to 10-digit unix minutes> fits), RayJob names to 47 and RayCluster names to
53. Scheduled RayJobs are <fullname>-<8-digit unix minutes> (45). Must be a DNS-1035 label (checked in _validate.tpl).
*/}}
{{- define "shardscore.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 36 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 36 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 36 | trimSuffix "-" }}
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

{{/* The account whose token the driver uses to report on its RayJob (progress-report.yaml). */}}
{{- define "shardscore.reportName" -}}
{{- printf "%s-report" (include "shardscore.fullname" .) }}
{{- end }}

{{/* The chart's image: repository:tag (tag defaults to appVersion). */}}
{{- define "shardscore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The image of a Ray group; call with (dict "root" $ "group" <values>): the group's image.* over image.*. */}}
{{- define "shardscore.groupImage" -}}
{{- $v := .root.Values -}}
{{- $img := .group.image | default dict -}}
{{- printf "%s:%s" (default $v.image.repository $img.repository) (default (default .root.Chart.AppVersion $v.image.tag) $img.tag) }}
{{- end }}

{{/*
Resources with requests defaulting to the limits (Guaranteed QoS); explicit requests win key by key.
Call with (dict "resources" R "extraLimits" L); extraLimits (e.g. nvidia.com/gpu) go into both.
*/}}
{{- define "shardscore.resources" -}}
{{- $res := deepCopy (.resources | default dict) -}}
{{- $limits := merge (deepCopy (.extraLimits | default dict)) ($res.limits | default dict) -}}
{{- $requests := merge (deepCopy ($res.requests | default dict)) (deepCopy (.extraLimits | default dict)) (deepCopy $limits) -}}
{{- with $limits }}{{ $_ := set $res "limits" . }}{{ end -}}
{{- with $requests }}{{ $_ := set $res "requests" . }}{{ end -}}
{{- toYaml $res }}
{{- end }}

{{/*
Resolved rayJob.ephemeralCluster: "true" or "". null means true for scheduleMode rayCronJob (KubeRay skips all
deletion in clusterSelector mode, so a RayCronJob's children would pile up on the shared cluster), false otherwise.
*/}}
{{- define "shardscore.ephemeral" -}}
{{- $r := .Values.rayJob -}}
{{- if kindIs "invalid" $r.ephemeralCluster }}
{{- if and .Values.schedule (eq .Values.scheduleMode "rayCronJob") }}true{{ end }}
{{- else if $r.ephemeralCluster }}true{{ end }}
{{- end }}

{{/* Resolved cluster.create: "true" or "". null means yes unless every run brings its own cluster. */}}
{{- define "shardscore.clusterCreate" -}}
{{- $c := .Values.cluster.create -}}
{{- if kindIs "invalid" $c }}
{{- if not (and .Values.rayJob.enabled (include "shardscore.ephemeral" .)) }}true{{ end }}
{{- else if $c }}true{{ end }}
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

{{/* Selector of the release's Ray pods of one component (ray-head or ray-worker). */}}
{{- define "shardscore.raySelector" -}}
matchLabels:
  {{- include "shardscore.selectorLabels" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The stop timeouts, all derived from job.gracePeriod (the run's --grace-period, G) so that they stay in step:
- shardscore.jobStopWait = G + 15: Ray's job stop wait (RAY_JOB_STOP_WAIT_TIME_S, read by JobSupervisor.run in
  ray 2.60.0 dashboard/modules/job/job_supervisor.py; default 3 s) between the SIGTERM it sends the driver and its
  SIGKILL. The 15 s are for the driver to write the `aborted` manifest and release the lease after the grace.
- shardscore.podGrace = jobStopWait + 15: the Ray pods' terminationGracePeriodSeconds, which bounds their preStop
  hook (python -m shardscore.k8s.podstop): the head's hook stops the Ray jobs and waits for them (the stop wait, then
  Ray's status update), and the kubelet kills the pod at the latest at the end of this.
*/}}
{{- define "shardscore.jobStopWait" -}}
{{- $g := .Values.job.gracePeriod -}}
{{- add (int64 (ceil (kindIs "invalid" $g | ternary 20 $g))) 15 }}
{{- end }}

{{- define "shardscore.podGrace" -}}
{{- add (include "shardscore.jobStopWait" . | int64) 15 }}
{{- end }}
