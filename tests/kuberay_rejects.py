"""What the real KubeRay v1.7.0 operator (or the API server, with the CRDs' CEL rules) rejects, and how the chart
keeps it from being rendered.

Each `Rejection` pairs the two halves of one rule:

- the chart's half: values that `helm template` refuses with a message naming the value (`chart`, run by
  tests/test_chart_kuberay_rules.py::test_the_chart_refuses_what_kuberay_rejects), or, for objects the chart cannot
  render at all, a note saying which render-time test (in tests/test_chart_*.py) shows it (`chart_note`);
- the operator's half: a hand-written object that the real operator must reject (`manifest`), with where the
  rejection shows (`rejected_by`, `event_reason`, `event_on`) and a piece of its message (`message`, copied from
  ray-operator/controllers/ray/utils/validation.go or the CRD at v1.7.0). The cluster e2e (issue 12) creates each
  manifest in a fresh namespace and asserts the rejection:
    - "apiserver": `kubectl create` fails (a CRD CEL rule), stderr contains `message`;
    - "operator": the object is stored, then a RayJob reaches status.jobDeploymentStatus ValidationFailed with
      `message` in status.message, and any kind gets a Warning event with reason `event_reason` whose message
      contains `message`;
    - "pod-security": in a namespace labelled `namespace_labels`, the head pod is never created (the events of the
      RayCluster the RayJob creates show the admission error containing `message`).
  With `event_on: "RayCluster"` the event is on the RayCluster that the RayJob creates (label
  ray.io/originated-from-cr-name=<RayJob>), not on the RayJob.

Nothing here re-implements the operator's rules: tests/test_chart_kuberay_rules.py only checks that the manifests are
well-formed (the CRD schema accepts the operator-level ones, so that it is the operator's rule that rejects them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

CI = Path(__file__).resolve().parents[1] / "helm" / "shardscore" / "ci"
CPU, GPU, EPHEMERAL = CI / "cpu-values.yaml", CI / "gpu-values.yaml", CI / "ephemeral-values.yaml"
CRONJOB, RAYCRONJOB = CI / "cronjob-values.yaml", CI / "raycronjob-values.yaml"
VALIDATION = "ray-operator/controllers/ray/utils/validation.go"
IMAGE = "shardscore:0.1.0"


@dataclass(frozen=True)
class ChartRefusal:
    values: tuple[Path, ...]
    sets: tuple[str, ...] = ()
    set_json: tuple[str, ...] = ()
    needles: tuple[str, ...] = ()  # what the chart's message must name: the value's path, and the rule


@dataclass(frozen=True)
class Rejection:
    id: str
    kuberay: str  # the function (and file) at v1.7.0 that rejects it
    rejected_by: str  # "apiserver" | "operator" | "pod-security"
    message: str  # part of the rejection's message
    manifest: dict
    chart: ChartRefusal | None = None
    chart_note: str = ""
    event_reason: str = ""  # the Warning event's reason (operator rejections)
    namespace_labels: dict = field(default_factory=dict)
    event_on: str = ""  # "" = the manifest's own object; "RayCluster" = the RayCluster its RayJob creates


# ------------------------------------------------------------------------------------------- minimal objects

def container(name: str) -> dict:
    return {"name": name, "image": IMAGE, "resources": {"limits": {"cpu": "1", "memory": "2Gi"},
                                                        "requests": {"cpu": "1", "memory": "2Gi"}}}


def cluster_spec(head_env=(), head_params=None, worker_params=None, min_replicas=0, max_replicas=1,
                 autoscaling=False, auth="disabled", ray_version="2.60.0", **extra) -> dict:
    """A RayCluster spec that the operator accepts, unless a keyword says otherwise."""
    head = container("ray-head")
    if head_env:
        head["env"] = [dict(e) for e in head_env]
    spec = {
        "rayVersion": ray_version,
        "authOptions": {"mode": auth},
        "enableInTreeAutoscaling": autoscaling,
        "headGroupSpec": {"rayStartParams": dict(head_params or {"num-cpus": "0"}),
                          "template": {"spec": {"containers": [head]}}},
        "workerGroupSpecs": [{"groupName": "cpu", "replicas": min_replicas, "minReplicas": min_replicas,
                              "maxReplicas": max_replicas, "rayStartParams": dict(worker_params or {}),
                              "template": {"spec": {"containers": [container("ray-worker")]}}}],
    }
    spec.update(extra)
    return spec


def raycluster(name: str, spec: dict, annotations: dict | None = None) -> dict:
    meta = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": meta, "spec": spec}


ENTRYPOINT = "shardscore run --input s3://b/in --output s3://b/out --model shardscore.models.dummy:load_model"


def rayjob(name: str, *, ephemeral: bool = True, **spec) -> dict:
    """A RayJob that the operator accepts, unless a keyword says otherwise: ephemeral (rayClusterSpec) or on the
    RayCluster `shared` (clusterSelector)."""
    body = {"entrypoint": ENTRYPOINT, "submissionMode": "K8sJobMode"}
    if ephemeral:
        body["rayClusterSpec"] = cluster_spec()
    else:
        body["clusterSelector"] = {"ray.io/cluster": "shared"}
    body.update(spec)
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": name}, "spec": body}


def raycronjob(name: str, schedule: str = "@hourly", **template) -> dict:
    return {"apiVersion": "ray.io/v1", "kind": "RayCronJob", "metadata": {"name": name},
            "spec": {"schedule": schedule, "jobTemplate": rayjob("unused", **template)["spec"]}}


def rules(*items) -> dict:
    return {"deletionRules": [{"condition": dict(cond), "policy": policy} for cond, policy in items]}


OK_RULES = rules(({"jobStatus": "SUCCEEDED", "ttlSeconds": 0}, "DeleteCluster"),
                 ({"jobStatus": "FAILED", "ttlSeconds": 0}, "DeleteCluster"))


def op(id, kuberay, message, manifest, chart=None, chart_note="", event_reason="", **kw) -> Rejection:
    if not event_reason:
        event_reason = {"RayJob": "InvalidRayJobSpec", "RayCluster": "InvalidRayClusterSpec",
                        "RayCronJob": "InvalidRayCronJobSpec"}[manifest["kind"]]
    return Rejection(id, kuberay, "operator", message, manifest, chart, chart_note, event_reason, **kw)


def cel(id, message, manifest, chart=None, chart_note="", crd_rule="") -> Rejection:
    return Rejection(id, crd_rule or "the CRD's x-kubernetes-validations (ray.io_rayjobs.yaml)", "apiserver",
                     message, manifest, chart, chart_note)


def refuse(values, *sets, set_json=(), needle) -> ChartRefusal:
    return ChartRefusal(tuple(values), tuple(sets), tuple(set_json), (needle,) if isinstance(needle, str) else needle)


DELETION = "rayJob.deletionStrategy"

REJECTIONS: list[Rejection] = [
    # --------------------------------------------------------------- found in review (issue 12 §1)
    op("backoffLimit beside clusterSelector", f"ValidateRayJobSpec ({VALIDATION})",
       "BackoffLimit is incompatible with ClusterSelector mode",
       rayjob("reject-backofflimit-selector", ephemeral=False, backoffLimit=1),
       refuse([CPU], "rayJob.backoffLimit=1", needle="rayJob.backoffLimit")),
    op("ttl without shutdownAfterJobFinishes", f"validateDeletionConfiguration ({VALIDATION})",
       "shutdownAfterJobFinishes set to false cannot have TTLSecondsAfterFinished",
       rayjob("reject-ttl-no-shutdown", shutdownAfterJobFinishes=False, ttlSecondsAfterFinished=300),
       refuse([EPHEMERAL], "rayJob.shutdownAfterJobFinishes=false", needle="rayJob.ttlSecondsAfterFinished")),
    op("deletionRules with shutdownAfterJobFinishes", f"validateDeletionConfiguration ({VALIDATION})",
       "spec.shutdownAfterJobFinishes and spec.deletionStrategy.deletionRules are mutually exclusive",
       rayjob("reject-rules-and-shutdown", shutdownAfterJobFinishes=True, deletionStrategy=copy.deepcopy(OK_RULES)),
       refuse([EPHEMERAL], set_json=(f'{DELETION}={{"deletionRules": [{{"condition": {{"jobStatus": "SUCCEEDED"}}, '
                                     '"policy": "DeleteCluster"}]}',), needle=f"{DELETION}.deletionRules")),
    op("RayCronJob name longer than 36", f"ValidateRayCronJobSpec ({VALIDATION}; MaxRayCronJobNameLength)",
       "RayCronJob name should be no more than 36 characters", raycronjob("r" * 37),
       chart_note="the full name is cut to 36 characters: test_long_release_names_fit_kuberay_limits"),

    # --------------------------------------------------------------- RayJob spec
    op("SidecarMode with clusterSelector", f"ValidateRayJobSpec ({VALIDATION})",
       "ClusterSelector is not supported in SidecarMode",
       rayjob("reject-sidecar-selector", ephemeral=False, submissionMode="SidecarMode"),
       refuse([CPU], "rayJob.submissionMode=SidecarMode", "podSecurityStandard=baseline",
              needle=("rayJob.submissionMode", "ClusterSelector is not supported in SidecarMode"))),
    op("SidecarMode with a submitter template", f"ValidateRayJobSpec ({VALIDATION})",
       "SidecarMode doesn't support SubmitterPodTemplate",
       rayjob("reject-sidecar-template", submissionMode="SidecarMode",
              submitterPodTemplate={"spec": {"restartPolicy": "Never", "containers": [container("submitter")]}}),
       chart_note="submitterPodTemplate/submitterConfig only with K8sJobMode: test_sidecar_mode_and_the_restricted_standard"),
    op("runtimeEnvYAML that is not a mapping", f"ValidateRayJobSpec ({VALIDATION}; UnmarshalRuntimeEnvYAML)",
       "failed to unmarshal RuntimeEnvYAML",
       rayjob("reject-runtime-env", runtimeEnvYAML="- pip\n- numpy\n"),
       refuse([CPU], set_json=('rayJob.runtimeEnvYAML="- pip\\n- numpy\\n"',), needle="rayJob.runtimeEnvYAML")),
    op("RayJob name that is not a DNS-1035 label", f"ValidateRayJobMetadata ({VALIDATION})",
       "RayJob name should be a valid DNS1035 label", rayjob("1scoring"),
       refuse([CPU], "fullnameOverride=1scoring", needle="fullnameOverride"), event_reason="InvalidRayJobMetadata"),
    op("RayJob name longer than 47", f"ValidateRayJobMetadata ({VALIDATION}; MaxRayJobNameLength)",
       "RayJob name should be no more than 47 characters", rayjob("r" * 48),
       chart_note="the full name is cut to 36 and ticks add 9: test_long_release_names_fit_kuberay_limits",
       event_reason="InvalidRayJobMetadata"),

    # --------------------------------------------------------------- RayJob deletionStrategy
    cel("deletionRules with onSuccess/onFailure",
        "legacy policies (onSuccess/onFailure) and deletionRules cannot be used together",
        rayjob("reject-rules-and-legacy", shutdownAfterJobFinishes=False,
               deletionStrategy={**copy.deepcopy(OK_RULES), "onSuccess": {"policy": "DeleteCluster"},
                                 "onFailure": {"policy": "DeleteCluster"}}),
        refuse([EPHEMERAL], "rayJob.shutdownAfterJobFinishes=false", "rayJob.ttlSecondsAfterFinished=0",
               set_json=(f'{DELETION}={{"deletionRules": [{{"condition": {{"jobStatus": "SUCCEEDED"}}, '
                         '"policy": "DeleteCluster"}], "onSuccess": {"policy": "DeleteCluster"}, '
                         '"onFailure": {"policy": "DeleteCluster"}}',), needle=(DELETION, "not both"))),
    cel("onSuccess without onFailure",
        "deletionStrategy requires either BOTH onSuccess and onFailure, OR the deletionRules field",
        rayjob("reject-legacy-half", deletionStrategy={"onSuccess": {"policy": "DeleteCluster"}}),
        refuse([EPHEMERAL], f"{DELETION}.onSuccess.policy=DeleteCluster",
               needle=(DELETION, "set both onSuccess and onFailure"))),
    op("legacy policy without its type", f"validateLegacyDeletionPolicies ({VALIDATION})",
       "the DeletionPolicyType field of DeletionStrategy.OnSuccess cannot be unset",
       rayjob("reject-legacy-unset", deletionStrategy={"onSuccess": {}, "onFailure": {"policy": "DeleteCluster"}}),
       refuse([EPHEMERAL], set_json=(f'{DELETION}={{"onSuccess": {{}}, "onFailure": {{"policy": "DeleteCluster"}}}}',),
              needle=f"{DELETION}.onSuccess.policy")),
    op("DeleteCluster rule on an existing cluster", f"validateDeletionRules ({VALIDATION})",
       "DeletionPolicyType 'DeleteCluster' not supported when ClusterSelector is set",
       rayjob("reject-rule-selector", ephemeral=False, deletionStrategy=rules(
           ({"jobStatus": "SUCCEEDED"}, "DeleteCluster"))),
       refuse([CPU], set_json=(f'{DELETION}={{"deletionRules": [{{"condition": {{"jobStatus": "SUCCEEDED"}}, '
                               '"policy": "DeleteCluster"}]}',), needle=f"{DELETION}.deletionRules[0].policy")),
    op("DeleteCluster on success on an existing cluster", f"validateLegacyDeletionPolicies ({VALIDATION})",
       "the ClusterSelector mode doesn't support DeletionStrategy=DeleteCluster on success",
       rayjob("reject-legacy-selector", ephemeral=False, deletionStrategy={
           "onSuccess": {"policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteSelf"}}),
       refuse([CPU], f"{DELETION}.onSuccess.policy=DeleteCluster", f"{DELETION}.onFailure.policy=DeleteSelf",
              needle=f"{DELETION}.onSuccess.policy")),
    op("DeleteWorkers rule with autoscaling", f"validateDeletionRules ({VALIDATION})",
       "DeletionPolicyType 'DeleteWorkers' not supported with autoscaling enabled",
       rayjob("reject-rule-workers-autoscaling", shutdownAfterJobFinishes=False,
              rayClusterSpec=cluster_spec(autoscaling=True),
              deletionStrategy=rules(({"jobStatus": "SUCCEEDED"}, "DeleteWorkers"))),
       refuse([EPHEMERAL], "rayJob.shutdownAfterJobFinishes=false", "rayJob.ttlSecondsAfterFinished=0",
              set_json=(f'{DELETION}={{"deletionRules": [{{"condition": {{"jobStatus": "SUCCEEDED"}}, '
                        '"policy": "DeleteWorkers"}]}',), needle=f"{DELETION}.deletionRules[0].policy")),
    op("DeleteWorkers on success with autoscaling", f"validateLegacyDeletionPolicies ({VALIDATION})",
       "DeletionStrategy=DeleteWorkers currently does not support RayCluster with autoscaling enabled",
       rayjob("reject-legacy-workers-autoscaling", shutdownAfterJobFinishes=False,
              rayClusterSpec=cluster_spec(autoscaling=True),
              deletionStrategy={"onSuccess": {"policy": "DeleteWorkers"}, "onFailure": {"policy": "DeleteCluster"}}),
       refuse([EPHEMERAL], "rayJob.shutdownAfterJobFinishes=false", "rayJob.ttlSecondsAfterFinished=0",
              f"{DELETION}.onSuccess.policy=DeleteWorkers", f"{DELETION}.onFailure.policy=DeleteCluster",
              needle=f"{DELETION}.onSuccess.policy")),
    op("DeleteNone with shutdownAfterJobFinishes", f"validateLegacyDeletionPolicies ({VALIDATION})",
       "shutdownAfterJobFinshes is set to 'true' while deletion policy is 'DeleteNone'",
       rayjob("reject-legacy-deletenone", shutdownAfterJobFinishes=True,
              deletionStrategy={"onSuccess": {"policy": "DeleteNone"}, "onFailure": {"policy": "DeleteCluster"}}),
       refuse([EPHEMERAL], f"{DELETION}.onSuccess.policy=DeleteNone", f"{DELETION}.onFailure.policy=DeleteCluster",
              needle=f"{DELETION}.onSuccess.policy")),
    cel("deletion condition with both statuses", "JobStatus and JobDeploymentStatus cannot be used together",
        rayjob("reject-condition-both", shutdownAfterJobFinishes=False, deletionStrategy=rules(
            ({"jobStatus": "FAILED", "jobDeploymentStatus": "Failed"}, "DeleteCluster"))),
        refuse([EPHEMERAL], "rayJob.shutdownAfterJobFinishes=false", "rayJob.ttlSecondsAfterFinished=0",
               set_json=(f'{DELETION}={{"deletionRules": [{{"condition": {{"jobStatus": "FAILED", '
                         '"jobDeploymentStatus": "Failed"}, "policy": "DeleteCluster"}]}',),
               needle=f"{DELETION}.deletionRules[0].condition")),
    cel("deletion condition without a status", "the deletion condition requires either the JobStatus or the "
        "JobDeploymentStatus field", rayjob("reject-condition-none", shutdownAfterJobFinishes=False,
                                            deletionStrategy=rules(({"ttlSeconds": 10}, "DeleteCluster"))),
        refuse([EPHEMERAL], "rayJob.shutdownAfterJobFinishes=false", "rayJob.ttlSecondsAfterFinished=0",
               set_json=(f'{DELETION}={{"deletionRules": [{{"condition": {{"ttlSeconds": 10}}, '
                         '"policy": "DeleteCluster"}]}',), needle=f"{DELETION}.deletionRules[0].condition")),
    op("two rules for one status and policy", f"validateDeletionRules ({VALIDATION})",
       "duplicate rule for DeletionPolicyType 'DeleteCluster' and JobStatus 'SUCCEEDED'",
       rayjob("reject-rule-duplicate", shutdownAfterJobFinishes=False, deletionStrategy=rules(
           ({"jobStatus": "SUCCEEDED", "ttlSeconds": 0}, "DeleteCluster"),
           ({"jobStatus": "SUCCEEDED", "ttlSeconds": 60}, "DeleteCluster"))),
       refuse([EPHEMERAL], "rayJob.shutdownAfterJobFinishes=false", "rayJob.ttlSecondsAfterFinished=0",
              set_json=(f'{DELETION}={{"deletionRules": [{{"condition": {{"jobStatus": "SUCCEEDED"}}, '
                        '"policy": "DeleteCluster"}, {"condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 60}, '
                        '"policy": "DeleteCluster"}]}',), needle=(f"{DELETION}.deletionRules[1]", "a second rule"))),
    op("DeleteSelf before DeleteCluster", f"validateTTLConsistency ({VALIDATION})",
       "DeleteSelf TTL (10) must be >= DeleteCluster TTL (60)",
       rayjob("reject-rule-ttl-order", shutdownAfterJobFinishes=False, deletionStrategy=rules(
           ({"jobStatus": "SUCCEEDED", "ttlSeconds": 60}, "DeleteCluster"),
           ({"jobStatus": "SUCCEEDED", "ttlSeconds": 10}, "DeleteSelf"))),
       refuse([EPHEMERAL], "rayJob.shutdownAfterJobFinishes=false", "rayJob.ttlSecondsAfterFinished=0",
              set_json=(f'{DELETION}={{"deletionRules": [{{"condition": {{"jobStatus": "SUCCEEDED", '
                        '"ttlSeconds": 60}, "policy": "DeleteCluster"}, {"condition": {"jobStatus": "SUCCEEDED", '
                        '"ttlSeconds": 10}, "policy": "DeleteSelf"}]}',),
              needle=(f"{DELETION}.deletionRules", "validateTTLConsistency"))),

    # --------------------------------------------------------------- RayCluster spec (standalone and in RayJobs)
    op("minReplicas above maxReplicas", f"ValidateRayClusterSpec ({VALIDATION})",
       "has minReplicas 3 greater than maxReplicas 1",
       raycluster("reject-min-max", cluster_spec(min_replicas=3, max_replicas=1)),
       refuse([CPU], "cluster.cpuWorkers.minReplicas=3", "cluster.cpuWorkers.maxReplicas=1",
              "cluster.cpuWorkers.replicas=1", needle="cluster.cpuWorkers.minReplicas")),
    op("labels in rayStartParams", f"validateRayGroupLabels ({VALIDATION})",
       "rayStartParams['labels'] is not supported for cpu group",
       raycluster("reject-start-labels", cluster_spec(worker_params={"labels": "pool=a"})),
       refuse([CPU], "cluster.cpuWorkers.rayStartParams.labels=pool=a", needle="cluster.cpuWorkers.rayStartParams.labels")),
    op("redis username in the head's env", f"ValidateRayClusterSpec ({VALIDATION})",
       "cannot set redis username in rayStartParams or environment variables",
       raycluster("reject-redis-username", cluster_spec(head_env=[{"name": "REDIS_USERNAME", "value": "u"}])),
       refuse([CPU], "cluster.head.env[0].name=REDIS_USERNAME", "cluster.head.env[0].value=u",
              needle="REDIS_USERNAME")),
    op("RAY_REDIS_ADDRESS without GCS fault tolerance", f"ValidateRayClusterSpec ({VALIDATION})",
       "RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance",
       raycluster("reject-redis-address", cluster_spec(head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:6379"}])),
       refuse([CPU], "extraEnv[0].name=RAY_REDIS_ADDRESS", "extraEnv[0].value=r:6379", needle="RAY_REDIS_ADDRESS")),
    op("autoscaler v2 env without autoscaling", f"ValidateRayClusterSpec ({VALIDATION})",
       "environment variable RAY_enable_autoscaler_v2 cannot be set to 'true' when enableInTreeAutoscaling is false",
       raycluster("reject-autoscaler-v2-env", cluster_spec(
           head_env=[{"name": "RAY_enable_autoscaler_v2", "value": "true"}])),
       refuse([CPU], "cluster.autoscaling.enabled=false", "cluster.head.env[0].name=RAY_enable_autoscaler_v2",
              "cluster.head.env[0].value=true", needle="RAY_enable_autoscaler_v2")),
    op("token auth on Ray older than 2.52", f"ValidateRayClusterSpec ({VALIDATION})",
       "authOptions.mode is 'token' but minimum Ray version is 2.52.0, got 2.50.0",
       raycluster("reject-token-old-ray", cluster_spec(auth="token", ray_version="2.50.0")),
       refuse([CPU], "rayVersion=2.50.0", needle=("rayAuth.mode", "2.52.0"))),
    op("upgradeStrategy on a RayJob's cluster", f"ValidateRayClusterUpgradeOptions ({VALIDATION})",
       "upgradeStrategy cannot be set when RayCluster is created by RayJob",
       rayjob("reject-job-upgrade-strategy", rayClusterSpec=cluster_spec(upgradeStrategy={"type": "Recreate"})),
       chart_note="upgradeStrategy only on the standalone RayCluster: test_upgrade_strategy_only_on_the_long_lived_cluster",
       event_reason="InvalidRayClusterSpec", event_on="RayCluster"),

    # --------------------------------------------------------------- RayCronJob
    op("TZ in a RayCronJob schedule", f"ValidateRayCronJobSpec ({VALIDATION})",
       "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
       raycronjob("reject-cron-tz", schedule="CRON_TZ=UTC 0 * * * *"),
       refuse([RAYCRONJOB], "schedule=CRON_TZ=UTC 0 * * * *", needle="schedule")),

    # --------------------------------------------------------------- Pod Security admission
    Rejection("SidecarMode under the restricted Pod Security Standard",
              "Pod Security admission (restricted); KubeRay's GetDefaultSubmitterContainer "
              "(ray-operator/controllers/ray/common/job.go) sets no securityContext on the sidecar",
              "pod-security", "violates PodSecurity \"restricted",
              rayjob("reject-sidecar-restricted", submissionMode="SidecarMode", rayClusterSpec=cluster_spec()),
              refuse([EPHEMERAL], "rayJob.submissionMode=SidecarMode", needle=("rayJob.submissionMode", "podSecurityStandard")),
              namespace_labels={"pod-security.kubernetes.io/enforce": "restricted"}, event_on="RayCluster"),
]


def restricted(manifest: dict) -> dict:
    """A copy of a manifest whose pod templates pass the restricted Pod Security Standard on their own, as the
    chart's do (for the pod-security rejection, where only KubeRay's sidecar must be at fault)."""
    obj = copy.deepcopy(manifest)
    sc = {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
          "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    spec = obj["spec"].get("rayClusterSpec") or obj["spec"]
    for tmpl in [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec.get("workerGroupSpecs", [])]:
        for c in tmpl["spec"]["containers"]:
            c["securityContext"] = copy.deepcopy(sc)
    return obj


REJECTIONS = [r if r.rejected_by != "pod-security" else
              Rejection(r.id, r.kuberay, r.rejected_by, r.message, restricted(r.manifest), r.chart, r.chart_note,
                        r.event_reason, r.namespace_labels, r.event_on) for r in REJECTIONS]
