from __future__ import annotations

import pytest

import chartlib as c
from chartlib import CPU, EPHEMERAL, FULLNAME, GPU, entrypoint_argv, submitter_then_head_argv


def test_entrypoint_cpu(rendered):
    assert entrypoint_argv(c.one(rendered["cpu-values"], "RayJob")) == [
        "shardscore", "run", "--input", "s3://shardscore/input", "--output", "s3://shardscore/output",
        "--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=8", "--strategy", "tasks",
        "--max-failed-shards", "0", "--grace-period", "20", "--num-cpus-per-worker", "1"]


def test_entrypoint_gpu(rendered):
    assert entrypoint_argv(c.one(rendered["gpu-values"], "RayJob")) == [
        "shardscore", "run", "--input", "s3://shardscore/input", "--output", "s3://shardscore/output-gpu",
        "--model", "shardscore.models.torch_model:load_model", "--model-arg", "path=/models/model.pt",
        "--strategy", "actors", "--device", "cuda", "--batch-size", "4096", "--num-actors", "2",
        "--grace-period", "20", "--num-gpus-per-worker", "1", "--key-columns", "id"]


def test_entrypoint_every_flag():
    sets = ["job.input=/data/in", "job.output=s3://b/out", "job.model=pkg.mod:load", "job.modelArgs.b=2",
            "job.modelArgs.a=x=y", "job.strategy=actors", "job.numActors=3", "job.numCpusPerWorker=0.5",
            # --set keeps 0.5 a string "0.5": the schema takes numeric strings for fractional fields
            "job.numGpusPerWorker=0.25", "job.memoryPerWorker=8589934592", "job.maxInFlight=16", "job.device=cuda",
            "job.batchSize=1024", "job.maxRowsPerShard=500000", "job.keyColumns={id,ts}", "job.maxFailedShards=2",
            "job.maxShardsPerTask=8", "job.maxRetries=0",
            "job.overwrite=true", "job.progressInterval=30", "job.summaryJson=/tmp/summary.json",
            "job.pool=nightly", "job.poolIdleTimeout=4000", "job.gracePeriod=7.5", "job.extraArgs={--foo,bar}"]
    argv = entrypoint_argv(c.one(c.render([CPU], sets), "RayJob"))
    assert argv[:2] == ["shardscore", "run"]
    pairs = {}
    rest = argv[2:]
    flags = [a for a in rest if a.startswith("--")]
    assert flags.count("--model-arg") == 3 and rest[-2:] == ["--foo", "bar"]
    i = 0
    while i < len(rest) - 2:
        if rest[i] in ("--overwrite",):
            pairs[rest[i]] = True
            i += 1
        elif rest[i] == "--model-arg":
            pairs.setdefault("--model-arg", []).append(rest[i + 1])
            i += 2
        else:
            pairs[rest[i]] = rest[i + 1]
            i += 2
    assert pairs == {
        "--input": "/data/in", "--output": "s3://b/out", "--model": "pkg.mod:load", "--model-arg": ["a=x=y", "b=2", "payload_mb=8"],
        "--strategy": "actors", "--num-actors": "3", "--num-cpus-per-worker": "0.5", "--num-gpus-per-worker": "0.25",
        "--memory-per-worker": "8589934592", "--max-in-flight": "16", "--device": "cuda", "--batch-size": "1024",
        "--max-rows-per-shard": "500000", "--key-columns": "id,ts", "--max-failed-shards": "2", "--overwrite": True,
        "--max-shards-per-task": "8", "--max-retries": "0", "--pool": "nightly", "--pool-idle-timeout": "4000",
        "--progress-interval": "30", "--summary-json": "/tmp/summary.json", "--grace-period": "7.5"}


def test_large_integers_from_values_files_keep_their_digits(rendered):
    argv = entrypoint_argv(c.one(rendered["ephemeral-values"], "RayJob"))
    assert argv[argv.index("--memory-per-worker") + 1] == "2147483648"
    docs = c.render([CPU], ["job.memoryPerWorker=2GiB"])
    argv = entrypoint_argv(c.one(docs, "RayJob"))
    assert argv[argv.index("--memory-per-worker") + 1] == "2GiB"
    docs = c.render([CPU], extra=["--set-json", 'job.modelArgs={"rows": 10000000, "scale": 0.5}'])
    argv = entrypoint_argv(c.one(docs, "RayJob"))
    assert "rows=10000000" in argv and "scale=0.5" in argv


@pytest.mark.parametrize("values", [CPU, GPU, EPHEMERAL], ids=lambda p: p.stem)
def test_entrypoint_survives_both_shells(values, rendered):
    job = c.one(rendered[values.stem], "RayJob")
    assert submitter_then_head_argv(job["spec"]["entrypoint"]) == entrypoint_argv(job)


ALL_ENTRYPOINTS = [("cpu-values", "RayJob"), ("gpu-values", "RayJob"), ("ephemeral-values", "RayJob"),
                   ("raycronjob-values", "RayCronJob"), ("cronjob-values", "tick")]


@pytest.mark.parametrize("name,kind", ALL_ENTRYPOINTS, ids=[e[0] for e in ALL_ENTRYPOINTS])
def test_entrypoints_pass_the_jobs_own_option_checks(name, kind, rendered):
    """The argv the head runs, parsed and validated by shardscore's own CLI parser and RunConfig checks."""
    cli = pytest.importorskip("shardscore.cli", reason="the shardscore job package is not installed (make venv)")
    docs = rendered[name]
    if kind == "RayJob":
        entrypoint = c.one(docs, "RayJob")["spec"]["entrypoint"]
    elif kind == "RayCronJob":
        entrypoint = c.one(docs, "RayCronJob")["spec"]["jobTemplate"]["entrypoint"]
    else:
        entrypoint = c.tick_rayjob(docs)["spec"]["entrypoint"]
    argv = submitter_then_head_argv(entrypoint, {"SHARDSCORE_TICK_JOB": f"{FULLNAME}-29395530"})
    assert argv[:2] == ["shardscore", "run"]
    args = cli._parser().parse_args(argv[1:])
    cfg = cli.config.load(cli._flags(args), env={}).validate()
    assert cfg.input and cfg.output and cfg.model
