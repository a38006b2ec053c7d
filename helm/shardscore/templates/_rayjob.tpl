{{/*
The RayJob: entrypoint, spec (one-shot RayJob, RayCronJob jobTemplate, CronJob tick template) and object.
*/}}

{{/*
What a RayCronJob child (outputMode "derived") knows of its tick: KubeRay v1.7.0 names the child <name>-<unix minutes
of the scheduled time> (getRayJobName in raycronjob_controller.go) and its submitter Job after the RayJob
(createNewK8sJob in rayjob_controller.go). The submitter pod reads that name from its label
batch.kubernetes.io/job-name (downward API, env SHARDSCORE_TICK_JOB) and its bash expands these words before
`ray job submit`, so Ray receives literal values: --logical-time <the tick, ISO 8601 UTC> (which fills job.input's
and job.output's placeholders), and with scheduleLayout perTick the output run=<UTC YYYYMMDDTHHMMZ> and
--latest-pointer <job.output>/_LATEST. KubeRay v1.6.x names children <name>-<5 random characters>
(constructRayJob): those are not minutes, so there is no logical time (a placeholder then fails the run, exit 2,
naming it) and the run folder is run=<those characters>, still one per child and the same for every submitter retry
(tests/e2e_cluster/test_schedules.py checks it against the child's name). The CronJob tick writes literal values
itself instead.
*/}}
{{- define "shardscore.tickMinutes" -}}
s=${SHARDSCORE_TICK_JOB##*-}; case $s in (*[!0-9]*) {{ .other }};; (*) {{ .minutes }};; esac
{{- end }}

{{- define "shardscore.tickOutput" -}}
{{- printf "\"%s/run=$(%s)\"" (trimSuffix "/" .) (include "shardscore.tickMinutes" (dict "other" "echo \"$s\"" "minutes" "date -u -d \"@$(( s * 60 ))\" +%Y%m%dT%H%MZ")) -}}
{{- end }}

{{- define "shardscore.tickLogicalTime" -}}
{{- printf "$(%s)" (include "shardscore.tickMinutes" (dict "other" "" "minutes" "echo --logical-time \"$(date -u -d \"@$(( s * 60 ))\" +%Y-%m-%dT%H:%M:%SZ)\"")) -}}
{{- end }}

{{/* A value as text; integral numbers without exponent (YAML numbers reach templates as float64). */}}
{{- define "shardscore.num" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/*
The argv of `shardscore run ...` as a JSON list, unquoted. --output's value is always at index 5, where
shardscore.entrypoint puts a RayCronJob child's derived output (the CronJob tick finds --output by name).
*/}}
{{- define "shardscore.entrypointArgs" -}}
{{- $j := .Values.job -}}
{{- $a := list "shardscore" "run" "--input" $j.input "--output" $j.output "--model" $j.model -}}
{{- range $k := keys ($j.modelArgs | default dict) | sortAlpha }}
{{- $a = concat $a (list "--model-arg" (printf "%s=%s" $k (include "shardscore.num" (index $j.modelArgs $k)))) }}
{{- end }}
{{- with $j.strategy }}{{ $a = concat $a (list "--strategy" .) }}{{ end }}
{{- with $j.device }}{{ $a = concat $a (list "--device" .) }}{{ end }}
{{- with $j.pool }}{{ $a = concat $a (list "--pool" .) }}{{ end }}
{{- /* Integers: printed with int64 so that large values never turn into 1e+09. */}}
{{- range $flag, $key := dict "--num-actors" "numActors" "--max-in-flight" "maxInFlight" "--batch-size" "batchSize" "--max-rows-per-shard" "maxRowsPerShard" "--max-shards-per-task" "maxShardsPerTask" "--max-failed-shards" "maxFailedShards" "--max-retries" "maxRetries" }}
{{- $val := index $j $key }}
{{- if not (kindIs "invalid" $val) }}{{ $a = concat $a (list $flag (toString (int64 $val))) }}{{ end }}
{{- end }}
{{- range $flag, $key := dict "--num-cpus-per-worker" "numCpusPerWorker" "--num-gpus-per-worker" "numGpusPerWorker" "--progress-interval" "progressInterval" "--memory-per-worker" "memoryPerWorker" "--pool-idle-timeout" "poolIdleTimeout" "--grace-period" "gracePeriod" "--max-bad-rows" "maxBadRows" "--batch-timeout" "batchTimeout" }}
{{- $val := index $j $key }}
{{- if not (kindIs "invalid" $val) }}{{ $a = concat $a (list $flag (include "shardscore.num" $val)) }}{{ end }}
{{- end }}
{{- with $j.keyColumns }}{{ $a = concat $a (list "--key-columns" (join "," .)) }}{{ end }}
{{- if $j.overwrite }}{{ $a = append $a "--overwrite" }}{{ end }}
{{- if or $j.incremental (and .Values.schedule (eq .Values.scheduleLayout "incremental")) }}{{ $a = append $a "--incremental" }}{{ end }}
{{- if $j.partitionTable }}{{ $a = append $a "--partition-table" }}{{ end }}
{{- with $j.summaryJson }}{{ $a = concat $a (list "--summary-json" .) }}{{ end }}
{{- range $j.extraArgs }}{{ $a = append $a (toString .) }}{{ end }}
{{- toJson $a }}
{{- end }}

{{/* `shardscore run ...` as one shell word list; call with (dict "root" $ "outputMode" "fixed"|"derived"). */}}
{{- define "shardscore.entrypoint" -}}
{{- $words := list -}}
{{- $perTick := eq .root.Values.scheduleLayout "perTick" -}}
{{- range $i, $arg := include "shardscore.entrypointArgs" .root | fromJsonArray }}
{{- if and (eq $i 5) (eq $.outputMode "derived") $perTick }}
{{- $words = append $words (include "shardscore.tickOutput" $arg) }}
{{- else if regexMatch "^[-A-Za-z0-9_.]+$" $arg }}
{{- $words = append $words $arg }}
{{- else }}
{{- $words = append $words (squote $arg) }}
{{- end }}
{{- end }}
{{- if eq .outputMode "derived" }}
{{- $words = append $words (include "shardscore.tickLogicalTime" .) }}
{{- if $perTick }}{{ $words = concat $words (list "--latest-pointer" (squote (printf "%s/_LATEST" (trimSuffix "/" .root.Values.job.output)))) }}{{ end }}
{{- end }}
{{- join " " $words }}
{{- end }}

{{/*
RayJob.spec; call with (dict "root" $ "outputMode" M). outputMode: "fixed" (one run), "derived" (RayCronJob
children: the output is derived from the child's name by the submitter), "tick" (the CronJob tick's template:
no entrypoint, the tick sets it with the tick's literal output).
*/}}
{{- define "shardscore.rayJobSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $r := $v.rayJob -}}
{{- $ephemeral := include "shardscore.ephemeral" $root -}}
{{- if ne .outputMode "tick" }}
entrypoint: {{ include "shardscore.entrypoint" . | quote }}
{{- end }}
submissionMode: {{ $r.submissionMode }}
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
{{- if $ephemeral }}
backoffLimit: {{ int $r.backoffLimit }}
shutdownAfterJobFinishes: {{ $r.shutdownAfterJobFinishes }}
{{- if $r.shutdownAfterJobFinishes }}
ttlSecondsAfterFinished: {{ int $r.ttlSecondsAfterFinished }}
{{- end }}
rayClusterSpec:
  {{- include "shardscore.clusterSpec" (dict "root" $root "standalone" false) | trim | nindent 2 }}
{{- else }}
{{- /* No backoffLimit: ValidateRayJobSpec rejects backoffLimit > 0 with clusterSelector (refused in _validate.tpl). */}}
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
    {{- if $v.imagePullSecrets }}{{ include "shardscore.imagePullSecrets" $root | nindent 4 }}{{ end }}
    containers:
      # KubeRay fills in the `ray job submit` command (the container has none) and, in token mode, the token.
      # No object-store credentials: the driver runs on the head, the submitter only talks to the dashboard.
      - name: ray-job-submitter
        image: {{ include "shardscore.image" $root }}
        imagePullPolicy: {{ $v.image.pullPolicy }}
        securityContext:
          {{- toYaml $v.containerSecurityContext | nindent 10 }}
        {{- $env := include "shardscore.authEnv" $root | trim }}
        {{- if eq .outputMode "derived" }}
        {{- /* The submitter Job is named after the RayJob, <schedule name>-<unix minutes>: the tick's time and output. */}}
        {{- $env = printf "%s\n- name: SHARDSCORE_TICK_JOB\n  valueFrom:\n    fieldRef: {fieldPath: \"metadata.labels['batch.kubernetes.io/job-name']\"}" $env | trim }}
        {{- end }}
        {{- with $r.submitter.env }}
        {{- $env = printf "%s\n%s" $env (toYaml .) | trim }}
        {{- end }}
        {{- with $env }}
        env:
          {{- . | nindent 10 }}
        {{- end }}
        resources:
          {{- toYaml $r.submitter.resources | nindent 10 }}
{{- end }}
{{- end }}

{{/*
A whole RayJob object; call with (dict "root" $ "name" N "outputMode" M "component" C). Without a name (the
CronJob tick's template) metadata.name is left to the tick.
*/}}
{{- define "shardscore.rayJob" -}}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  {{- with .name }}
  name: {{ . }}
  {{- end }}
  namespace: {{ .root.Release.Namespace }}
  {{- include "shardscore.metadata" (dict "root" .root "component" .component "labels" .root.Values.rayJob.labels "annotations" .root.Values.rayJob.annotations) | nindent 2 }}
spec:
  {{- include "shardscore.rayJobSpec" . | trim | nindent 2 }}
{{- end }}
