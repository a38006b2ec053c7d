from __future__ import annotations

import pytest

import chartlib as c
from chartlib import CPU, CRONJOB, EPHEMERAL, GPU, RAYCRONJOB


REJECTED = [
    # (id, values files, --set, text the error must contain): the schema and the chart's own rules
    ("unknown strategy", [CPU], ["job.strategy=batch"], "strategy"),
    ("unknown device", [CPU], ["job.device=tpu"], "device"),
    ("negative replicas", [CPU], ["cluster.cpuWorkers.replicas=-1"], "replicas"),
    ("negative maxReplicas", [CPU], ["cluster.cpuWorkers.maxReplicas=-2"], "maxReplicas"),
    ("replicas above maxReplicas", [GPU], ["cluster.gpuWorkers.replicas=3"], "cluster.gpuWorkers.replicas"),
    ("bad cron", [CRONJOB], ["schedule=every night"], "schedule"),
    ("six-field cron", [CRONJOB], ["schedule=0 30 2 * * *"], "schedule"),
    ("cron with TZ prefix", [CRONJOB], ["schedule=CRON_TZ=UTC 0 2 * * *"], "schedule"),
    ("missing input", [CPU], ["job.input="], "input"),
    ("missing output", [CPU], ["job.output="], "output"),
    ("missing model", [CPU], ["job.model="], "model"),
    ("inline access key", [CPU], ["objectStore.accessKeyId=AKIAEXAMPLE"], "accessKeyId"),
    ("inline secret in credentialsSecret", [CPU], ["objectStore.credentialsSecret.secretAccessKey=abc"],
     "secretAccessKey"),
    ("inline secret env", [CPU], ["extraEnv[0].name=AWS_SECRET_ACCESS_KEY", "extraEnv[0].value=abc"], "extraEnv"),
    ("inline secret in the submitter's env", [CPU], ["rayJob.submitter.env[0].name=AWS_ACCESS_KEY_ID",
                                                     "rayJob.submitter.env[0].value=abc"], "submitter"),
    ("zero GPUs per pod", [GPU], ["cluster.gpuWorkers.gpusPerPod=0"], "gpusPerPod"),
    ("unknown submission mode", [CPU], ["rayJob.submissionMode=Batch"], "submissionMode"),
    ("InteractiveMode", [CPU], ["rayJob.submissionMode=InteractiveMode"], "submissionMode"),
    ("unknown schedule mode", [CRONJOB], ["scheduleMode=kubernetes"], "scheduleMode"),
    ("shell characters in input", [CPU], ["job.input=s3://b/in; rm -rf /"], "input"),
    ("quote in a model arg", [CPU], ["job.modelArgs.path=/models/it's.pt"], "modelArgs"),
    ("unknown top-level value", [CPU], ["workers=3"], "workers"),
    ("unknown auth mode", [CPU], ["rayAuth.mode=none"], "mode"),
    ("negative backoffLimit", [EPHEMERAL], ["rayJob.backoffLimit=-1"], "backoffLimit"),
    ("memory that is not a size", [CPU], ["job.memoryPerWorker=lots"], "memoryPerWorker"),
    ("negative maxBadRows", [CPU], ["job.maxBadRows=-1"], "maxBadRows"),
    ("a placeholder in a one-off release", [CPU], ["job.output=s3://b/scores/date={date}"],
     "placeholders ({date}) are filled from a scheduled tick's time"),
    ("unknown layout", [CRONJOB], ["scheduleLayout=daily"], "scheduleLayout"),
    ("a layout without a schedule", [CPU], ["scheduleLayout=incremental"], "scheduleLayout incremental: applies to "
                                                                            "scheduled releases"),
    ("perDate without a placeholder", [CRONJOB], ["scheduleLayout=perDate"], "job.output needs a placeholder"),
    ("incremental over one date", [CRONJOB], ["scheduleLayout=incremental", "job.input=s3://b/in/date={date}"],
     "must be literal paths"),
    ("a zero batchTimeout", [CPU], ["job.batchTimeout=0"], "batchTimeout"),
    ("no worker group", [CPU], ["cluster.cpuWorkers.enabled=false"], "worker group"),
    ("no cluster to run on", [CPU], ["cluster.create=false"], "rayJob.clusterName"),
    ("schedule with HTTPMode", [RAYCRONJOB], ["rayJob.submissionMode=HTTPMode"], "K8sJobMode"),
    ("pool name with capitals", [CPU], ["job.strategy=actors", "job.pool=Nightly"], "pool"),
    ("pool without actors", [CPU], ["job.pool=nightly"], "job.pool"),
    ("removed sharedMemorySize", [CPU], ["cluster.sharedMemorySize=1Gi"], "sharedMemorySize"),
    ("removed kubectl image", [CRONJOB], ["cronJob.kubectlImage.tag=1.33"], "kubectlImage"),
    ("a label value too long", [CPU], ["commonLabels.team=" + "x" * 64], "commonLabels"),
    ("a label key with spaces", [CPU], ["cluster.head.labels.a b=c"], "a b"),
    ("unknown upgrade strategy", [CPU], ["cluster.upgradeStrategy=RollingUpdate"], "upgradeStrategy"),
    ("unknown Pod Security Standard", [CPU], ["podSecurityStandard=strict"], "podSecurityStandard"),
    ("an operator CIDR that is not one", [CPU], ["networkPolicy.operator.ipBlocks[0]=api-server"], "ipBlocks"),
    ("deletion rule with an unknown status", [EPHEMERAL],
     ["rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=DONE",
      "rayJob.deletionStrategy.deletionRules[0].policy=DeleteSelf"], "jobStatus"),
    ("a negative deletion TTL", [EPHEMERAL],
     ["rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=FAILED",
      "rayJob.deletionStrategy.deletionRules[0].condition.ttlSeconds=-1",
      "rayJob.deletionStrategy.deletionRules[0].policy=DeleteSelf"], "ttlSeconds"),
]


@pytest.mark.parametrize("files,sets,needle", [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_bad_values_are_rejected(files, sets, needle):
    err = c.render_error(files, sets)
    assert needle in err, err
    helm3 = c.helm3_bin()
    if helm3:  # Helm 3 validates the schema with another library: the same values must fail there too
        err3 = c.render_error(files, sets, helm=helm3)
        assert needle in err3, err3
