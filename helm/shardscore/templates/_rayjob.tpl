{{/*
The RayJob: entrypoint, spec (one-shot RayJob, RayCronJob jobTemplate, CronJob tick template) and object.
*/}}

{{/*
Per-tick output (scheduled runs). The RayJob of a tick is named <name>-<unix minutes of the scheduled time>
(RayCronJob names its children so; the CronJob tick pod does the same), and KubeRay names the submitter Job after
the RayJob. The submitter pod reads that name from its label batch.kubernetes.io/job-name (downward API, env
SHARDSCORE_TICK_JOB) and its bash expands this before `ray job submit`, so Ray receives a literal path.
*/}}
{{- define "shardscore.tickOutput" -}}
{{- printf "\"%s/run=$(date -u -d \"@$(( ${SHARDSCORE_TICK_JOB##*-} * 60 ))\" +%%Y%%m%%dT%%H%%MZ)\"" (trimSuffix "/" .) -}}
{{- end }}

{{/* A value as text; integral numbers without exponent (YAML numbers reach templates as float64). */}}
{{- define "shardscore.num" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/* `shardscore run ...`; call with (dict "root" $ "scheduled" bool). */}}
{{- define "shardscore.entrypoint" -}}
{{- $j := .root.Values.job -}}
{{- $a := list "shardscore" "run" "--input" (squote $j.input) "--output" -}}
{{- if .scheduled }}
{{- $a = append $a (include "shardscore.tickOutput" $j.output) }}
{{- else }}
{{- $a = append $a (squote $j.output) }}
{{- end }}
{{- $a = concat $a (list "--model" (squote $j.model)) }}
{{- range $k := keys ($j.modelArgs | default dict) | sortAlpha }}
{{- $a = concat $a (list "--model-arg" (squote (printf "%s=%s" $k (include "shardscore.num" (index $j.modelArgs $k))))) }}
{{- end }}
{{- with $j.strategy }}{{ $a = concat $a (list "--strategy" (squote .)) }}{{ end }}
{{- with $j.device }}{{ $a = concat $a (list "--device" (squote .)) }}{{ end }}
{{- with $j.pool }}{{ $a = concat $a (list "--pool" (squote .)) }}{{ end }}
{{- /* Integers: printed with int64 so that large values never turn into 1e+09. */}}
{{- range $flag, $key := dict "--num-actors" "numActors" "--max-in-flight" "maxInFlight" "--batch-size" "batchSize" "--max-rows-per-shard" "maxRowsPerShard" "--max-shards-per-task" "maxShardsPerTask" "--max-failed-shards" "maxFailedShards" "--max-retries" "maxRetries" }}
{{- $val := index $j $key }}
{{- if not (kindIs "invalid" $val) }}{{ $a = concat $a (list $flag (squote (int64 $val))) }}{{ end }}
{{- end }}
{{- range $flag, $key := dict "--num-cpus-per-worker" "numCpusPerWorker" "--num-gpus-per-worker" "numGpusPerWorker" "--progress-interval" "progressInterval" "--memory-per-worker" "memoryPerWorker" "--pool-idle-timeout" "poolIdleTimeout" }}
{{- $val := index $j $key }}
{{- if not (kindIs "invalid" $val) }}{{ $a = concat $a (list $flag (squote (include "shardscore.num" $val))) }}{{ end }}
{{- end }}
{{- with $j.keyColumns }}{{ $a = concat $a (list "--key-columns" (squote (join "," .))) }}{{ end }}
{{- if $j.overwrite }}{{ $a = append $a "--overwrite" }}{{ end }}
{{- with $j.summaryJson }}{{ $a = concat $a (list "--summary-json" (squote .)) }}{{ end }}
{{- range $j.extraArgs }}{{ $a = append $a (squote .) }}{{ end }}
{{- join " " $a }}
{{- end }}

{{/* RayJob.spec; call with (dict "root" $ "scheduled" bool). */}}
{{- define "shardscore.rayJobSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $r := $v.rayJob -}}
entrypoint: {{ include "shardscore.entrypoint" . | quote }}
submissionMode: {{ $r.submissionMode }}
backoffLimit: {{ int $r.backoffLimit }}
{{- with $r.activeDeadlineSeconds }}
activeDeadlineSeconds: {{ int . }}
{{- end }}
{{- if not (kindIs "invalid" $r.entrypointNumCpus) }}
entrypointNumCpus: {{ $r.entrypointNumCpus }}
{{- end }}
{{- if not (kindIs "invalid" $r.entrypointNumGpus) }}
entrypointNumGpus: {{ $r.entrypointNumGpus }}
{{- end }}
{{- with $r.runtimeEnvYAML }}
runtimeEnvYAML: {{ . | quote }}
{{- end }}
{{- with $r.metadata }}
metadata:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $r.deletionStrategy }}
deletionStrategy:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $r.ephemeralCluster }}
shutdownAfterJobFinishes: {{ $r.shutdownAfterJobFinishes }}
ttlSecondsAfterFinished: {{ int $r.ttlSecondsAfterFinished }}
rayClusterSpec:
  {{- include "shardscore.clusterSpec" $root | nindent 2 }}
{{- else }}
clusterSelector:
  ray.io/cluster: {{ include "shardscore.targetClusterName" $root }}
{{- end }}
{{- if eq $r.submissionMode "K8sJobMode" }}
submitterConfig:
  backoffLimit: {{ int $r.submitter.backoffLimit }}
submitterPodTemplate:
  metadata:
    {{- include "shardscore.metadata" (dict "root" $root "component" "ray-job-submitter") | nindent 4 }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "shardscore.serviceAccountName" $root }}
    automountServiceAccountToken: false
    securityContext:
      {{- toYaml $v.podSecurityContext | nindent 6 }}
    {{- if $root.Values.imagePullSecrets }}{{ include "shardscore.imagePullSecrets" $root | nindent 4 }}{{ end }}
    containers:
      # KubeRay fills in the `ray job submit` command (the container has none).
      - name: ray-job-submitter
        image: {{ include "shardscore.image" $root }}
        imagePullPolicy: {{ $v.image.pullPolicy }}
        securityContext:
          {{- toYaml $v.containerSecurityContext | nindent 10 }}
        {{- $env := include "shardscore.commonEnv" $root | trim }}
        {{- if .scheduled }}
        {{- /* The submitter Job is named after the RayJob, <schedule name>-<unix minutes>: the tick --output derives from. */}}
        {{- $env = printf "%s\n- name: SHARDSCORE_TICK_JOB\n  valueFrom:\n    fieldRef: {fieldPath: \"metadata.labels['batch.kubernetes.io/job-name']\"}" $env | trim }}
        {{- end }}
        {{- with $env }}
        env:
          {{- . | nindent 10 }}
        {{- end }}
        {{- with $v.extraEnvFrom }}
        envFrom:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        resources:
          {{- toYaml $r.submitter.resources | nindent 10 }}
{{- end }}
{{- end }}

{{/* A whole RayJob object; call with (dict "root" $ "name" N "scheduled" bool "component" C "extraLabels" L
"tickOwner" bool); tickOwner adds the ownerReference placeholders of the CronJob tick template. */}}
{{- define "shardscore.rayJob" -}}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  {{- include "shardscore.metadata" (dict "root" .root "component" .component "labels" (merge (dict) (.extraLabels | default dict) (.root.Values.rayJob.labels | default dict)) "annotations" .root.Values.rayJob.annotations) | nindent 2 }}
  {{- if .tickOwner }}
  # Owned by the tick's Job: the CronJob's history limits (and helm uninstall) delete old RayJobs with it.
  ownerReferences:
    - apiVersion: batch/v1
      kind: Job
      name: __SHARDSCORE_TICK_JOB__
      uid: __SHARDSCORE_TICK_JOB_UID__
  {{- end }}
spec:
  {{- include "shardscore.rayJobSpec" . | nindent 2 }}
{{- end }}
