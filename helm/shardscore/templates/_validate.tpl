{{/*
Render-time refusals: rules across values that values.schema.json cannot express. One `fail` per rule, naming the
value. Most of them mirror a check of the KubeRay operator v1.7.0 (ray-operator/controllers/ray/utils/validation.go
unless said otherwise), named next to it: the operator would otherwise reject the object after `helm install`
succeeded (a RayJob in ValidationFailed, a RayCluster or RayCronJob with an Invalid...Spec Warning event) or the API
server would refuse it (the CRDs' CEL rules). tests/kuberay_rejects.py holds, for each of them, the hand-written
object the real operator must reject, for the cluster e2e.
*/}}

{{/* "true" when env (a list of EnvVar maps) has a variable named .name; call with (dict "env" E "name" N). */}}
{{- define "shardscore.hasEnv" -}}
{{- range .env }}{{ if eq .name $.name }}true{{ end }}{{ end }}
{{- end }}

{{/* The value of env var .name in .env ("" when absent). */}}
{{- define "shardscore.envValue" -}}
{{- range .env }}{{ if eq .name $.name }}{{ .value | default "" }}{{ end }}{{ end }}
{{- end }}

{{/* The RayJob.spec.deletionStrategy rules (validateDeletionConfiguration and its helpers). */}}
{{- define "shardscore.validateDeletionStrategy" -}}
{{- $v := .Values -}}
{{- $r := $v.rayJob -}}
{{- $ds := $r.deletionStrategy -}}
{{- $ephemeral := include "shardscore.ephemeral" . -}}
{{- $rules := $ds.deletionRules | default list -}}
{{- $legacy := or (hasKey $ds "onSuccess") (hasKey $ds "onFailure") -}}
{{- /* CRD CEL rule on deletionStrategy + validateDeletionConfiguration: legacy policies and rules are exclusive. */}}
{{- if and $rules $legacy }}
{{- fail "rayJob.deletionStrategy: use either deletionRules or onSuccess/onFailure, not both (KubeRay: CRD rule on deletionStrategy, validateDeletionConfiguration)" }}
{{- end }}
{{- /* CRD CEL rule + validateDeletionConfiguration: BOTH onSuccess and onFailure, or deletionRules. */}}
{{- if and (not $rules) (not (and (hasKey $ds "onSuccess") (hasKey $ds "onFailure"))) }}
{{- fail "rayJob.deletionStrategy: set both onSuccess and onFailure, or deletionRules (KubeRay: validateDeletionConfiguration)" }}
{{- end }}
{{- /* validateDeletionConfiguration: deletionRules and shutdownAfterJobFinishes are mutually exclusive. */}}
{{- if and $rules $ephemeral $r.shutdownAfterJobFinishes }}
{{- fail "rayJob.deletionStrategy.deletionRules: needs rayJob.shutdownAfterJobFinishes=false (KubeRay: validateDeletionConfiguration, the two are mutually exclusive)" }}
{{- end }}
{{- if $legacy }}
{{- range $when := list "onSuccess" "onFailure" }}
{{- /* validateLegacyDeletionPolicies: each policy must be set. */}}
{{- if not (index $ds $when).policy }}
{{- fail (printf "rayJob.deletionStrategy.%s.policy: must be set (KubeRay: validateLegacyDeletionPolicies)" $when) }}
{{- end }}
{{- $policy := (index $ds $when).policy }}
{{- /* validateLegacyDeletionPolicies: no DeleteCluster/DeleteWorkers in clusterSelector mode. */}}
{{- if and (not $ephemeral) (has $policy (list "DeleteCluster" "DeleteWorkers")) }}
{{- fail (printf "rayJob.deletionStrategy.%s.policy: %s is not allowed on an existing cluster (rayJob.ephemeralCluster=false); use DeleteSelf or DeleteNone (KubeRay: validateLegacyDeletionPolicies)" $when $policy) }}
{{- end }}
{{- /* validateLegacyDeletionPolicies: DeleteWorkers does not work with autoscaling. */}}
{{- if and $ephemeral (eq $policy "DeleteWorkers") $v.cluster.autoscaling.enabled }}
{{- fail (printf "rayJob.deletionStrategy.%s.policy: DeleteWorkers does not work with cluster.autoscaling.enabled (KubeRay: validateLegacyDeletionPolicies)" $when) }}
{{- end }}
{{- /* validateLegacyDeletionPolicies: shutdownAfterJobFinishes with DeleteNone. */}}
{{- if and $ephemeral $r.shutdownAfterJobFinishes (eq $policy "DeleteNone") }}
{{- fail (printf "rayJob.deletionStrategy.%s.policy: DeleteNone contradicts rayJob.shutdownAfterJobFinishes=true (KubeRay: validateLegacyDeletionPolicies)" $when) }}
{{- end }}
{{- end }}
{{- end }}
{{- $seen := dict }}
{{- $ttls := dict }}
{{- range $i, $rule := $rules }}
{{- $cond := $rule.condition | default dict }}
{{- /* CRD CEL rules on condition + validateDeletionCondition: exactly one of jobStatus and jobDeploymentStatus. */}}
{{- if eq (hasKey $cond "jobStatus") (hasKey $cond "jobDeploymentStatus") }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules[%d].condition: set exactly one of jobStatus and jobDeploymentStatus (KubeRay: validateDeletionCondition)" $i) }}
{{- end }}
{{- /* validateDeletionRules: no DeleteCluster/DeleteWorkers when ClusterSelector is set. */}}
{{- if and (not $ephemeral) (has $rule.policy (list "DeleteCluster" "DeleteWorkers")) }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules[%d].policy: %s is not allowed on an existing cluster (rayJob.ephemeralCluster=false) (KubeRay: validateDeletionRules)" $i $rule.policy) }}
{{- end }}
{{- /* validateDeletionRules: DeleteWorkers not supported with autoscaling. */}}
{{- if and $ephemeral (eq $rule.policy "DeleteWorkers") $v.cluster.autoscaling.enabled }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules[%d].policy: DeleteWorkers does not work with cluster.autoscaling.enabled (KubeRay: validateDeletionRules)" $i) }}
{{- end }}
{{- $key := ternary (printf "JobStatus %s" (toString $cond.jobStatus)) (printf "JobDeploymentStatus %s" (toString $cond.jobDeploymentStatus)) (hasKey $cond "jobStatus") }}
{{- /* validateDeletionRules: one rule per (condition, policy). */}}
{{- if hasKey $seen (printf "%s/%s" $key $rule.policy) }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules[%d]: a second rule for policy %s and %s (KubeRay: validateDeletionRules)" $i $rule.policy $key) }}
{{- end }}
{{- $_ := set $seen (printf "%s/%s" $key $rule.policy) true }}
{{- $_ := set $ttls (printf "%s/%s" $key $rule.policy) (int ($cond.ttlSeconds | default 0)) }}
{{- end }}
{{- /* validateTTLConsistency: per condition, TTL of DeleteWorkers <= DeleteCluster <= DeleteSelf. */}}
{{- range $i, $rule := $rules }}
{{- $cond := $rule.condition | default dict }}
{{- $key := ternary (printf "JobStatus %s" (toString $cond.jobStatus)) (printf "JobDeploymentStatus %s" (toString $cond.jobDeploymentStatus)) (hasKey $cond "jobStatus") }}
{{- $order := list "DeleteWorkers" "DeleteCluster" "DeleteSelf" }}
{{- $prev := -1 }}
{{- $prevPolicy := "" }}
{{- range $policy := $order }}
{{- $k := printf "%s/%s" $key $policy }}
{{- if hasKey $ttls $k }}
{{- $ttl := index $ttls $k }}
{{- if lt $ttl $prev }}
{{- fail (printf "rayJob.deletionStrategy.deletionRules: for %s the ttlSeconds of %s (%d) must be >= that of %s (%d) (KubeRay: validateTTLConsistency)" $key $policy $ttl $prevPolicy $prev) }}
{{- end }}
{{- $prev = $ttl }}
{{- $prevPolicy = $policy }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Rules of the Ray cluster spec (ValidateRayClusterSpec), for the standalone RayCluster and rayClusterSpec. */}}
{{- define "shardscore.validateClusterSpec" -}}
{{- $v := .Values -}}
{{- range $key := list "head" "cpuWorkers" "gpuWorkers" }}
{{- $g := index $v.cluster $key }}
{{- if or (eq $key "head") $g.enabled }}
{{- /* validateRayGroupLabels: rayStartParams['labels'] is not supported. */}}
{{- if hasKey ($g.rayStartParams | default dict) "labels" }}
{{- fail (printf "cluster.%s.rayStartParams.labels: not supported, use cluster.%s.labels (KubeRay: validateRayGroupLabels)" $key $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key := list "cpuWorkers" "gpuWorkers" }}
{{- $g := index $v.cluster $key }}
{{- if $g.enabled }}
{{- /* ValidateRayClusterSpec: minReplicas must not exceed maxReplicas. */}}
{{- if gt (int $g.minReplicas) (int $g.maxReplicas) }}
{{- fail (printf "cluster.%s.minReplicas (%d) must not exceed cluster.%s.maxReplicas (%d) (KubeRay: ValidateRayClusterSpec)" $key (int $g.minReplicas) $key (int $g.maxReplicas)) }}
{{- end }}
{{- /* A chart rule: KubeRay clamps replicas silently; an out-of-range value is a mistake. */}}
{{- if or (lt (int $g.replicas) (int $g.minReplicas)) (gt (int $g.replicas) (int $g.maxReplicas)) }}
{{- fail (printf "cluster.%s.replicas (%d) must lie between cluster.%s.minReplicas (%d) and maxReplicas (%d)" $key (int $g.replicas) $key (int $g.minReplicas) (int $g.maxReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $g := list $v.extraEnv ($v.cluster.head.env | default list) }}
{{- if include "shardscore.hasEnv" (dict "env" $g "name" "RAY_JOB_STOP_WAIT_TIME_S") }}
{{- fail "RAY_JOB_STOP_WAIT_TIME_S in extraEnv or cluster.head.env: the chart sets it from job.gracePeriod (the run's --grace-period plus 15 s); set job.gracePeriod instead" }}
{{- end }}
{{- end }}
{{- $headEnv := include "shardscore.rayContainerEnv" (dict "root" . "group" $v.cluster.head "gpu" false) | fromYamlArray }}
{{- /* ValidateRayClusterSpec: no redis username in rayStartParams or env (GcsFaultToleranceOptions only). */}}
{{- if or (index ($v.cluster.head.rayStartParams | default dict) "redis-username") (include "shardscore.hasEnv" (dict "env" $headEnv "name" "REDIS_USERNAME")) }}
{{- fail "cluster.head.rayStartParams.redis-username / REDIS_USERNAME in extraEnv or cluster.head.env: not allowed (KubeRay: ValidateRayClusterSpec; GCS fault tolerance is configured with GcsFaultToleranceOptions, which this chart does not render)" }}
{{- end }}
{{- /* ValidateRayClusterSpec: RAY_REDIS_ADDRESS implies GCS fault tolerance, which needs the ray.io/ft-enabled annotation or GcsFaultToleranceOptions. */}}
{{- if include "shardscore.hasEnv" (dict "env" $headEnv "name" "RAY_REDIS_ADDRESS") }}
{{- $standalone := include "shardscore.clusterCreate" . }}
{{- $inJob := and $v.rayJob.enabled (include "shardscore.ephemeral" .) }}
{{- $clusterAnn := merge (dict) ($v.cluster.annotations | default dict) ($v.commonAnnotations | default dict) }}
{{- $jobAnn := merge (dict) ($v.rayJob.annotations | default dict) ($v.commonAnnotations | default dict) }}
{{- if or (and $standalone (ne (lower (toString (index $clusterAnn "ray.io/ft-enabled"))) "true")) (and $inJob (ne (lower (toString (index $jobAnn "ray.io/ft-enabled"))) "true")) }}
{{- fail "RAY_REDIS_ADDRESS in extraEnv or cluster.head.env: it turns on GCS fault tolerance, which needs the annotation ray.io/ft-enabled: \"true\" on the RayCluster (cluster.annotations) and the RayJob (rayJob.annotations) (KubeRay: ValidateRayClusterSpec)" }}
{{- end }}
{{- end }}
{{- /* ValidateRayClusterSpec: RAY_enable_autoscaler_v2 cannot be on without enableInTreeAutoscaling. */}}
{{- if not $v.cluster.autoscaling.enabled }}
{{- $a2 := include "shardscore.envValue" (dict "env" $headEnv "name" "RAY_enable_autoscaler_v2") }}
{{- if or (eq $a2 "1") (eq $a2 "true") }}
{{- fail (printf "RAY_enable_autoscaler_v2=%s in extraEnv or cluster.head.env needs cluster.autoscaling.enabled=true (KubeRay: ValidateRayClusterSpec)" $a2) }}
{{- end }}
{{- end }}
{{- /* ValidateRayClusterSpec: token authentication needs Ray >= 2.52.0. */}}
{{- if and (eq $v.rayAuth.mode "token") (not (semverCompare ">=2.52.0" $v.rayVersion)) }}
{{- fail (printf "rayAuth.mode=token needs rayVersion >= 2.52.0, got %s (KubeRay: ValidateRayClusterSpec)" $v.rayVersion) }}
{{- end }}
{{- end }}

{{/* A chart rule: scheduleLayout and the placeholders of job.input and job.output (templates.py), which only a
scheduled run fills, from its tick's time (the CronJob tick; a RayCronJob child on KubeRay >= 1.7.0). */}}
{{- define "shardscore.validateLayout" -}}
{{- $v := .Values -}}
{{- $templated := or (contains "{" $v.job.input) (contains "{" $v.job.output) (contains "}" $v.job.input) (contains "}" $v.job.output) -}}
{{- if and $templated (not $v.schedule) }}
{{- fail "job.input / job.output: placeholders ({date}) are filled from a scheduled tick's time; set schedule, or give literal paths" }}
{{- end }}
{{- if and (ne $v.scheduleLayout "perTick") (not $v.schedule) }}
{{- fail (printf "scheduleLayout %s: applies to scheduled releases; set schedule" $v.scheduleLayout) }}
{{- end }}
{{- if and $v.schedule (eq $v.scheduleLayout "perTick") (or (hasPrefix "iceberg://" $v.job.output) (hasPrefix "delta+" $v.job.output)) }}
{{- fail "scheduleLayout perTick: job.output is a table (iceberg://, delta+), and a tick's run would write <job.output>/run=<time>, which names no table; use scheduleLayout incremental, where every tick commits into the one table" }}
{{- end }}
{{- if and (eq $v.scheduleLayout "perDate") (not (contains "{" $v.job.output)) }}
{{- fail "scheduleLayout perDate: job.output needs a placeholder of the tick's date, e.g. s3://bucket/scores/date={date}" }}
{{- end }}
{{- if and (eq $v.scheduleLayout "incremental") $templated }}
{{- fail "scheduleLayout incremental: job.input and job.output must be literal paths: each tick scores the whole input's new files into one output, and an input of one date would remove the other dates' predictions" }}
{{- end }}
{{- end }}

{{- define "shardscore.validate" -}}
{{- $v := .Values -}}
{{- $fullname := include "shardscore.fullname" . -}}
{{- $ephemeral := include "shardscore.ephemeral" . -}}
{{- /* ValidateRayClusterMetadata / ValidateRayJobMetadata: names are DNS-1035 labels (lengths: see shardscore.fullname). */}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $fullname) }}
{{- fail (printf "fullnameOverride / release name: %q is not a DNS-1035 label (KubeRay: ValidateRayClusterMetadata / ValidateRayJobMetadata need names that start with a letter)" $fullname) }}
{{- end }}
{{- if and $v.cluster.cpuWorkers.enabled $v.cluster.gpuWorkers.enabled (eq $v.cluster.cpuWorkers.groupName $v.cluster.gpuWorkers.groupName) }}
{{- fail "cluster.gpuWorkers.groupName must differ from cluster.cpuWorkers.groupName" }}
{{- end }}
{{- if not (or $v.cluster.cpuWorkers.enabled $v.cluster.gpuWorkers.enabled) }}
{{- fail "cluster.cpuWorkers.enabled / cluster.gpuWorkers.enabled: enable at least one worker group (the head runs no scoring work)" }}
{{- end }}
{{- if and $v.job.pool (ne $v.job.strategy "actors") }}
{{- fail "job.pool: a pool keeps actors, so it needs job.strategy=actors" }}
{{- end }}
{{- include "shardscore.validateLayout" . }}
{{- range $i, $m := $v.volumeMounts }}
{{- /* A chart rule: KubeRay's BuildPod (common/pod.go) skips its memory-backed /dev/shm, sized to the memory limit, when one is mounted. */}}
{{- if eq (trimSuffix "/" (toString $m.mountPath)) "/dev/shm" }}
{{- fail (printf "volumeMounts[%d].mountPath: /dev/shm is KubeRay's (memory-backed, sized to the container's memory limit); do not replace it" $i) }}
{{- end }}
{{- end }}
{{- range $key := list "image.tag" "cluster.gpuWorkers.image.tag" }}
{{- $tag := ternary $v.image.tag ($v.cluster.gpuWorkers.image | default dict).tag (eq $key "image.tag") }}
{{- /* A chart rule: every Ray pod must run the same Ray version; a moving tag breaks that. */}}
{{- if eq (toString $tag) "latest" }}
{{- fail (printf "%s: \"latest\" is not allowed; pin a version (Ray pods of one cluster must run the same image)" $key) }}
{{- end }}
{{- end }}
{{- if or (include "shardscore.clusterCreate" .) (and $v.rayJob.enabled $ephemeral) }}
{{- include "shardscore.validateClusterSpec" . }}
{{- end }}
{{- if $v.networkPolicy.enabled }}
{{- /* A chart rule: an empty `from` would admit every source. */}}
{{- if not (or $v.networkPolicy.operator.namespace $v.networkPolicy.operator.ipBlocks) }}
{{- fail "networkPolicy.operator: set namespace (an in-cluster KubeRay operator) or ipBlocks (an operator outside the cluster, through the API server proxy): the operator must reach the head's dashboard" }}
{{- end }}
{{- end }}
{{- if $v.rayJob.enabled }}
{{- $r := $v.rayJob }}
{{- if and (not $ephemeral) (not (include "shardscore.clusterCreate" .)) (not $r.clusterName) }}
{{- fail "rayJob.clusterName: the RayJob runs on an existing RayCluster (rayJob.ephemeralCluster=false) but cluster.create is false and no rayJob.clusterName is given" }}
{{- end }}
{{- /* ValidateRayJobSpec: ClusterSelector is not supported in SidecarMode. */}}
{{- if and (eq $r.submissionMode "SidecarMode") (not $ephemeral) }}
{{- fail "rayJob.submissionMode: SidecarMode needs rayJob.ephemeralCluster=true (KubeRay: ValidateRayJobSpec, ClusterSelector is not supported in SidecarMode)" }}
{{- end }}
{{- /* Pod Security admission (restricted): KubeRay's GetDefaultSubmitterContainer (common/job.go) adds the sidecar without a securityContext. */}}
{{- if and (eq $r.submissionMode "SidecarMode") (eq $v.podSecurityStandard "restricted") }}
{{- fail "rayJob.submissionMode: SidecarMode cannot run under podSecurityStandard=restricted: KubeRay adds the submitter container to the head pod without a securityContext (allowPrivilegeEscalation, capabilities), so the restricted Pod Security Standard refuses the head pod. Use K8sJobMode, or a namespace at baseline and podSecurityStandard=baseline" }}
{{- end }}
{{- /* ValidateRayJobSpec: BackoffLimit is incompatible with ClusterSelector mode. */}}
{{- if and (not $ephemeral) (gt (int $r.backoffLimit) 0) }}
{{- fail (printf "rayJob.backoffLimit (%d): KubeRay rejects retries on an existing cluster (ValidateRayJobSpec: BackoffLimit is incompatible with ClusterSelector mode); set rayJob.ephemeralCluster=true, or rerun the RayJob (scheduleMode cronJob: cronJob.backoffLimit retries the tick)" (int $r.backoffLimit)) }}
{{- end }}
{{- /* validateDeletionConfiguration: a TTL needs shutdownAfterJobFinishes. */}}
{{- if and $ephemeral (not $r.shutdownAfterJobFinishes) (gt (int $r.ttlSecondsAfterFinished) 0) }}
{{- fail (printf "rayJob.ttlSecondsAfterFinished (%d) needs rayJob.shutdownAfterJobFinishes=true; set it to 0 (KubeRay: validateDeletionConfiguration)" (int $r.ttlSecondsAfterFinished)) }}
{{- end }}
{{- with $r.deletionStrategy }}
{{- include "shardscore.validateDeletionStrategy" $ }}
{{- end }}
{{- /* ValidateRayJobSpec: runtimeEnvYAML must unmarshal as a YAML mapping (dashboardclient.UnmarshalRuntimeEnvYAML). */}}
{{- with $r.runtimeEnvYAML }}
{{- $env := fromYaml . }}
{{- if hasKey $env "Error" }}
{{- fail (printf "rayJob.runtimeEnvYAML: not a YAML mapping: %s (KubeRay: ValidateRayJobSpec)" (index $env "Error")) }}
{{- end }}
{{- end }}
{{- if $v.schedule }}
{{- /* A chart rule: the per-tick output is derived in the submitter pod or set by the tick for a submitter. */}}
{{- if ne $r.submissionMode "K8sJobMode" }}
{{- fail "rayJob.submissionMode: scheduled runs (schedule) need K8sJobMode: the per-tick output is derived in the submitter pod" }}
{{- end }}
{{- /* ValidateRayCronJobSpec: no TZ or CRON_TZ in the schedule. */}}
{{- if and (eq $v.scheduleMode "rayCronJob") (contains "TZ" $v.schedule) }}
{{- fail "schedule: TZ or CRON_TZ cannot be used in the schedule; set timeZone (KubeRay: ValidateRayCronJobSpec)" }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.schedule (not $v.rayJob.enabled) }}
{{- fail "schedule: set, but rayJob.enabled is false" }}
{{- end }}
{{- /* A chart rule: the alerts select the PodMonitor's series by its job label. */}}
{{- if and $v.metrics.prometheusRule.enabled (not $v.metrics.podMonitor.enabled) }}
{{- fail "metrics.prometheusRule.enabled: needs metrics.podMonitor.enabled (the alerts read the series it scrapes)" }}
{{- end }}
{{- end }}
