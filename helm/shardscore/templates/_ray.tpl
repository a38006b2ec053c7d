{{/*
The Ray cluster: one pod template for the head and every worker group, and one cluster spec used by the
standalone RayCluster and by RayJobs that bring their own cluster (rayClusterSpec).
*/}}

{{/* RAY_AUTH_MODE=disabled where token auth is off (Ray 2.60 turns token auth on by itself otherwise). */}}
{{- define "shardscore.authEnv" -}}
{{- if eq .Values.rayAuth.mode "disabled" }}
- name: RAY_AUTH_MODE
  value: disabled
{{- end }}
{{- end }}

{{/* Env of every Ray container: auth mode, object store (credentials from the Secret), extraEnv. */}}
{{- define "shardscore.rayEnv" -}}
{{- $v := .Values -}}
{{- include "shardscore.authEnv" . }}
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

{{/* pyiceberg's configuration of values.icebergCatalog, for the driver on the head (empty when no name is set). */}}
{{- define "shardscore.icebergCatalogEnv" -}}
{{- with .Values.icebergCatalog }}
{{- if .name }}
{{- $prefix := printf "PYICEBERG_CATALOG__%s__" (upper .name) }}
{{- if .uriSecret.name }}
- name: {{ $prefix }}URI
  valueFrom:
    secretKeyRef: {name: {{ .uriSecret.name | quote }}, key: {{ .uriSecret.key | quote }}}
{{- else if .uri }}
- name: {{ $prefix }}URI
  value: {{ .uri | quote }}
{{- end }}
{{- with .warehouse }}
- name: {{ $prefix }}WAREHOUSE
  value: {{ . | quote }}
{{- end }}
{{- range $key, $value := .properties }}
- name: {{ $prefix }}{{ $key | upper | replace "." "__" | replace "-" "_" }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The env list of a Ray container as YAML text; call with (dict "root" $ "group" <values> "gpu" bool "kind" K). Shared with
_validate.tpl, which checks the head's env against KubeRay's rules.
*/}}
{{- define "shardscore.rayContainerEnv" -}}
{{- $env := include "shardscore.rayEnv" .root | trim }}
{{- /* The preStop hook has drained the pod already (its Ray jobs stopped or waited for, then `ray stop`). Ray's own drain
on SIGTERM (Node._drain_node_before_shutdown, ray/_private/node.py, Ray 2.60) would then ask a GCS that is often gone
with its head, and wait out its 30 s before the pod can end. */}}
{{- $env = printf "%s\n- name: RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S\n  value: \"0\"" $env | trim }}
{{- if not .gpu }}
{{- /* CPU pods must not see GPUs even when they land on a GPU node. */}}
{{- $env = printf "%s\n- name: NVIDIA_VISIBLE_DEVICES\n  value: void" $env | trim }}
{{- end }}
{{- if eq (.kind | default "") "head" }}
{{- /* The driver runs on the head under Ray's job supervisor: its stop wait must outlast --grace-period. */}}
{{- $env = printf "%s\n- name: RAY_JOB_STOP_WAIT_TIME_S\n  value: %s" $env (include "shardscore.jobStopWait" .root | quote) | trim }}
{{- with include "shardscore.icebergCatalogEnv" .root | trim }}
{{- $env = printf "%s\n%s" $env . | trim }}
{{- end }}
{{- end }}
{{- with .group.env }}
{{- $env = printf "%s\n%s" $env (toYaml .) | trim }}
{{- end }}
{{- $env }}
{{- end }}

{{/*
The token of the head's ServiceAccount, for the autoscaler container only. KubeRay v1.7.0 (DefaultHeadPodTemplate
in common/pod.go) keeps the head template's serviceAccountName and binds its autoscaler Role to that account
(BuildRoleBinding in common/rbac.go); the Ray autoscaler reads the token and CA at the standard in-cluster path.
Mounting it only there keeps it away from the Ray container, where the job's code runs.
*/}}
{{- define "shardscore.autoscalerTokenVolume" -}}
- name: autoscaler-api-token
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - {key: ca.crt, path: ca.crt}
      - downwardAPI:
          items:
            - path: namespace
              fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}
{{- end }}

{{/*
The Ray container's readiness probe, from cluster.readinessProbe; empty (KubeRay's own probe) when that is null or
the Ray is older than 2.53. KubeRay adds its probe only where the container has none (initLivenessAndReadinessProbe
in common/pod.go, v1.7.0): the same GET of the dashboard agent's /api/healthz that it sends from Ray 2.53 on
(supportsUnifiedHealthCheck), at the port the group's rayStartParams name. Call with (dict "root" $ "group" <values>).
*/}}
{{- define "shardscore.readinessProbe" -}}
{{- $p := .root.Values.cluster.readinessProbe -}}
{{- if and $p (semverCompare ">=2.53.0" .root.Values.rayVersion) -}}
httpGet:
  path: /api/healthz
  port: {{ int (get (.group.rayStartParams | default dict) "dashboard-agent-listen-port" | default 52365) }}
{{ toYaml $p }}
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
{{- $autoscalerToken := and $head $v.cluster.autoscaling.enabled -}}
{{- /* The driver runs on the head: the token it reports on its RayJob with (progress-report.yaml). */}}
{{- $reportToken := and $head $v.rayJob.enabled $v.rayJob.reportProgress -}}
{{- $annotations := merge (dict) ($g.annotations | default dict) -}}
{{- if $head }}{{ if ($g.preventEviction | default dict).safeToEvictAnnotation }}
{{- $_ := set $annotations "cluster-autoscaler.kubernetes.io/safe-to-evict" "false" }}
{{- end }}{{ end }}
metadata:
  {{- include "shardscore.metadata" (dict "root" $root "component" (ternary "ray-head" "ray-worker" $head) "labels" $g.labels "annotations" $annotations) | nindent 2 }}
spec:
  {{- /* Always the chart's account, autoscaling included (KubeRay only substitutes its own when none is set). */}}
  serviceAccountName: {{ include "shardscore.serviceAccountName" $root }}
  automountServiceAccountToken: false
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- if $v.imagePullSecrets }}{{ include "shardscore.imagePullSecrets" $root | nindent 2 }}{{ end }}
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
  {{- with $g.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- /*
  KubeRay runs the Ray container as `/bin/bash -c -- "ulimit ...; ray start ... --block"` (BuildPod in common/pod.go,
  GetContainerCommand in utils/util.go, v1.6.2 and v1.7.0): bash is PID 1 without a SIGTERM handler, so the
  kubelet's SIGTERM reaches no process (pid_namespaces(7)) and the driver, a child of Ray's job supervisor, would
  only be killed with the pod. The preStop hook gives it its --grace-period instead: on the head it stops the Ray
  jobs (the driver gets SIGTERM) and waits for them; on a worker it waits for them, at most the job stop wait (a
  worker deleted alone serves the run meanwhile, as it did for the 30 s its SIGTERM went unheard); then `ray stop`.
  */}}
  terminationGracePeriodSeconds: {{ include "shardscore.podGrace" $root }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" $head }}
      image: {{ include "shardscore.groupImage" (dict "root" $root "group" $g) }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      securityContext:
        {{- toYaml $v.containerSecurityContext | nindent 8 }}
      {{- with include "shardscore.rayContainerEnv" . }}
      env:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $v.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "shardscore.readinessProbe" (dict "root" $root "group" $g) }}
      readinessProbe:
        {{- . | nindent 8 }}
      {{- end }}
      lifecycle:
        preStop:
          exec:
            command: ["python", "-m", "shardscore.k8s.podstop", "--container-log", {{ if $head }}"--stop-jobs", "--timeout", "{{ include "shardscore.podGrace" $root }}"{{ else }}"--timeout", "{{ include "shardscore.jobStopWait" $root }}"{{ end }}]
      resources:
        {{- include "shardscore.resources" (dict "resources" $g.resources "extraLimits" (ternary (dict "nvidia.com/gpu" (int $g.gpusPerPod)) (dict) .gpu)) | nindent 8 }}
      {{- if $head }}
      ports:
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        - {name: metrics, containerPort: 8080}
      {{- end }}
      {{- /* No /dev/shm here: KubeRay's BuildPod (common/pod.go) adds a memory-backed one sized to the memory limit. */}}
      {{- if or $v.volumeMounts $reportToken }}
      volumeMounts:
        {{- if $reportToken }}
        - {name: rayjob-report-token, mountPath: /var/run/secrets/shardscore.io/rayjob-report, readOnly: true}
        {{- end }}
        {{- with $v.volumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
  {{- if or $v.volumes $autoscalerToken $reportToken }}
  volumes:
    {{- if $autoscalerToken }}
    {{- include "shardscore.autoscalerTokenVolume" $root | nindent 4 }}
    {{- end }}
    {{- if $reportToken }}
    - name: rayjob-report-token
      secret: {secretName: {{ include "shardscore.reportName" $root }}-token, defaultMode: 0444}
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
    {{- include "shardscore.rayPodTemplate" (dict "root" .root "group" $g "kind" "worker" "gpu" .gpu) | trim | nindent 4 }}
{{- end }}

{{/*
The RayCluster spec (RayCluster.spec and RayJob.spec.rayClusterSpec); call with (dict "root" $ "standalone" bool).
upgradeStrategy only on the standalone RayCluster: ValidateRayClusterUpgradeOptions (utils/validation.go) rejects
it on a cluster created by a RayJob.
*/}}
{{- define "shardscore.clusterSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- if .standalone }}
upgradeStrategy:
  type: {{ $v.cluster.upgradeStrategy }}
{{- end }}
rayVersion: {{ $v.rayVersion | quote }}
authOptions:
  mode: {{ $v.rayAuth.mode }}
enableInTreeAutoscaling: {{ $v.cluster.autoscaling.enabled }}
{{- if $v.cluster.autoscaling.enabled }}
autoscalerOptions:
  idleTimeoutSeconds: {{ int $v.cluster.autoscaling.idleTimeoutSeconds }}
  upscalingMode: {{ $v.cluster.autoscaling.upscalingMode }}
  {{- /*
  KubeRay runs the autoscaler as `/bin/bash -c -- "ray kuberay-autoscaler ..."` (BuildAutoscalerContainer in
  common/pod.go, v1.7.0); bash execs the one command, so Ray's autoscaler is the container's PID 1 and sets no SIGTERM
  handler: the kubelet's SIGTERM is dropped (pid_namespaces(7)) and every deleted head pod stayed for its whole
  terminationGracePeriodSeconds. Here bash stays PID 1 with a TERM trap and ends the container at once; the
  autoscaler holds no state to save. The command is KubeRay's own, from the variable it sets for such Args.
  */}}
  args: ["trap 'exit 0' TERM; $KUBERAY_GEN_AUTOSCALER_START_CMD & wait $!"]
  imagePullPolicy: {{ $v.image.pullPolicy }}
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
  {{- with include "shardscore.authEnv" $root }}
  env:
    {{- . | nindent 4 }}
  {{- end }}
  resources:
    {{- include "shardscore.resources" (dict "resources" $v.cluster.autoscaling.resources) | nindent 4 }}
  volumeMounts:
    - name: autoscaler-api-token
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
{{- end }}
headGroupSpec:
  rayStartParams:
    {{- toYaml ($v.cluster.head.rayStartParams | default dict) | nindent 4 }}
  template:
    {{- include "shardscore.rayPodTemplate" (dict "root" $root "group" $v.cluster.head "kind" "head" "gpu" false) | trim | nindent 4 }}
workerGroupSpecs:
{{- if $v.cluster.cpuWorkers.enabled }}
{{- include "shardscore.workerGroup" (dict "root" $root "group" $v.cluster.cpuWorkers "gpu" false) | trim | nindent 2 }}
{{- end }}
{{- if $v.cluster.gpuWorkers.enabled }}
{{- include "shardscore.workerGroup" (dict "root" $root "group" $v.cluster.gpuWorkers "gpu" true) | trim | nindent 2 }}
{{- end }}
{{- end }}
