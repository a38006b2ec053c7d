{{/*
The Ray cluster: one pod template for the head and every worker group, and one cluster spec used by the
standalone RayCluster and by RayJobs that bring their own cluster (rayClusterSpec).
*/}}

{{/* Env shared by every Ray container and the submitter: auth mode, object store, extraEnv. */}}
{{- define "shardscore.commonEnv" -}}
{{- $v := .Values -}}
{{- if eq $v.rayAuth.mode "disabled" }}
- name: RAY_AUTH_MODE
  value: disabled
{{- end }}
{{- with $v.objectStore.credentialsSecret }}
{{- if .name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .name | quote }}, key: {{ .accessKeyIdKey | quote }}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .name | quote }}, key: {{ .secretAccessKeyKey | quote }}}
{{- if .sessionTokenKey }}
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .name | quote }}, key: {{ .sessionTokenKey | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- with $v.objectStore.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $v.objectStore.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod template of a Ray node. Call with (dict "root" $ "group" <values of the group> "kind" "head"|"worker" "gpu" bool).
*/}}
{{- define "shardscore.rayPodTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $g := .group -}}
{{- $head := eq .kind "head" -}}
{{- $autoscaling := $v.cluster.autoscaling.enabled -}}
metadata:
  {{- include "shardscore.metadata" (dict "root" $root "component" (ternary "ray-head" "ray-worker" $head) "labels" $g.labels "annotations" $g.annotations) | nindent 2 }}
spec:
  {{- if and $head $autoscaling }}
  {{- /* KubeRay gives the head its own ServiceAccount with the autoscaler's RBAC when none is set. */}}
  automountServiceAccountToken: true
  {{- else }}
  serviceAccountName: {{ include "shardscore.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- if $root.Values.imagePullSecrets }}{{ include "shardscore.imagePullSecrets" $root | nindent 2 }}{{ end }}
  {{- with $g.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $g.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" $head }}
      image: {{ include "shardscore.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      securityContext:
        {{- toYaml $v.containerSecurityContext | nindent 8 }}
      {{- $env := include "shardscore.commonEnv" $root | trim }}
      {{- if not .gpu }}
      {{- /* CPU pods must not see GPUs even when they land on a GPU node. */}}
      {{- $env = printf "%s\n- name: NVIDIA_VISIBLE_DEVICES\n  value: void" $env | trim }}
      {{- end }}
      {{- with $g.env }}
      {{- $env = printf "%s\n%s" $env (toYaml .) | trim }}
      {{- end }}
      {{- with $env }}
      env:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $v.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- $res := deepCopy ($g.resources | default dict) }}
        {{- if .gpu }}
        {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" (int $g.gpusPerPod)) ($res.limits | default dict)) }}
        {{- end }}
        {{- toYaml $res | nindent 8 }}
      {{- if $head }}
      ports:
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        - {name: metrics, containerPort: 8080}
      {{- end }}
      {{- if or $v.cluster.sharedMemorySize $v.volumeMounts }}
      volumeMounts:
        {{- if $v.cluster.sharedMemorySize }}
        - name: shared-memory
          mountPath: /dev/shm
        {{- end }}
        {{- with $v.volumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
  {{- if or $v.cluster.sharedMemorySize $v.volumes }}
  volumes:
    {{- with $v.cluster.sharedMemorySize }}
    - name: shared-memory
      emptyDir:
        medium: Memory
        sizeLimit: {{ . }}
    {{- end }}
    {{- with $v.volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* A worker group. Call with (dict "root" $ "group" <values> "gpu" bool). */}}
{{- define "shardscore.workerGroup" -}}
{{- $g := .group -}}
- groupName: {{ $g.groupName }}
  replicas: {{ int $g.replicas }}
  minReplicas: {{ int $g.minReplicas }}
  maxReplicas: {{ int $g.maxReplicas }}
  rayStartParams:
    {{- toYaml ($g.rayStartParams | default dict) | nindent 4 }}
  template:
    {{- include "shardscore.rayPodTemplate" (dict "root" .root "group" $g "kind" "worker" "gpu" .gpu) | nindent 4 }}
{{- end }}

{{/* The RayCluster spec (RayCluster.spec and RayJob.spec.rayClusterSpec). */}}
{{- define "shardscore.clusterSpec" -}}
{{- $v := .Values -}}
rayVersion: {{ $v.rayVersion | quote }}
authOptions:
  mode: {{ $v.rayAuth.mode }}
enableInTreeAutoscaling: {{ $v.cluster.autoscaling.enabled }}
{{- if $v.cluster.autoscaling.enabled }}
autoscalerOptions:
  idleTimeoutSeconds: {{ int $v.cluster.autoscaling.idleTimeoutSeconds }}
  upscalingMode: {{ $v.cluster.autoscaling.upscalingMode }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
  {{- if eq $v.rayAuth.mode "disabled" }}
  env:
    - name: RAY_AUTH_MODE
      value: disabled
  {{- end }}
  resources:
    {{- toYaml $v.cluster.autoscaling.resources | nindent 4 }}
{{- end }}
headGroupSpec:
  rayStartParams:
    {{- toYaml ($v.cluster.head.rayStartParams | default dict) | nindent 4 }}
  template:
    {{- include "shardscore.rayPodTemplate" (dict "root" . "group" $v.cluster.head "kind" "head" "gpu" false) | nindent 4 }}
workerGroupSpecs:
{{- if $v.cluster.cpuWorkers.enabled }}
{{- include "shardscore.workerGroup" (dict "root" . "group" $v.cluster.cpuWorkers "gpu" false) | nindent 2 }}
{{- end }}
{{- if $v.cluster.gpuWorkers.enabled }}
{{- include "shardscore.workerGroup" (dict "root" . "group" $v.cluster.gpuWorkers "gpu" true) | nindent 2 }}
{{- end }}
{{- end }}
