{{/* Rules across fields, which values.schema.json cannot express. Each message names the field. */}}
{{- define "shardscore.validate" -}}
{{- $v := .Values -}}
{{- $fullname := include "shardscore.fullname" . -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $fullname) }}
{{- fail (printf "fullnameOverride / release name: %q is not a DNS-1035 label (KubeRay needs names that start with a letter)" $fullname) }}
{{- end }}
{{- range $key := list "cpuWorkers" "gpuWorkers" }}
{{- $g := index $v.cluster $key }}
{{- if $g.enabled }}
{{- if gt (int $g.minReplicas) (int $g.maxReplicas) }}
{{- fail (printf "cluster.%s.minReplicas (%d) must not exceed cluster.%s.maxReplicas (%d)" $key (int $g.minReplicas) $key (int $g.maxReplicas)) }}
{{- end }}
{{- if or (lt (int $g.replicas) (int $g.minReplicas)) (gt (int $g.replicas) (int $g.maxReplicas)) }}
{{- fail (printf "cluster.%s.replicas (%d) must lie between cluster.%s.minReplicas (%d) and maxReplicas (%d)" $key (int $g.replicas) $key (int $g.minReplicas) (int $g.maxReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.cluster.cpuWorkers.enabled $v.cluster.gpuWorkers.enabled (eq $v.cluster.cpuWorkers.groupName $v.cluster.gpuWorkers.groupName) }}
{{- fail "cluster.gpuWorkers.groupName must differ from cluster.cpuWorkers.groupName" }}
{{- end }}
{{- if and $v.job.pool (ne $v.job.strategy "actors") }}
{{- fail "job.pool: a pool keeps actors, so it needs job.strategy=actors" }}
{{- end }}
{{- if not (or $v.cluster.cpuWorkers.enabled $v.cluster.gpuWorkers.enabled) }}
{{- fail "cluster.cpuWorkers.enabled / cluster.gpuWorkers.enabled: enable at least one worker group (the head runs no scoring work)" }}
{{- end }}
{{- if $v.rayJob.enabled }}
{{- $r := $v.rayJob }}
{{- if and (not $r.ephemeralCluster) (not $v.cluster.create) (not $r.clusterName) }}
{{- fail "rayJob.clusterName: the RayJob runs on an existing RayCluster (rayJob.ephemeralCluster=false) but cluster.create is false and no rayJob.clusterName is given" }}
{{- end }}
{{- if and (eq $r.submissionMode "SidecarMode") (not $r.ephemeralCluster) }}
{{- fail "rayJob.submissionMode: SidecarMode needs rayJob.ephemeralCluster=true (KubeRay rejects clusterSelector with SidecarMode)" }}
{{- end }}
{{- if and $v.schedule (ne $r.submissionMode "K8sJobMode") }}
{{- fail "rayJob.submissionMode: scheduled runs (schedule) need K8sJobMode: the per-tick output is derived in the submitter pod" }}
{{- end }}
{{- end }}
{{- if and $v.schedule (not $v.rayJob.enabled) }}
{{- fail "schedule: set, but rayJob.enabled is false" }}
{{- end }}
{{- end }}
