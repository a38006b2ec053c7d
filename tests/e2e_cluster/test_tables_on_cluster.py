"""Issue 20 §4, tables on the cluster: the chart's RayJob scores into an Iceberg table whose catalog is PostgreSQL on
the host (pyiceberg's SQL catalog; its URI, with the password, from a Secret through values.icebergCatalog) and whose
warehouse is the host's S3; the image holds pyiceberg. Worker pods deleted in the middle of the run: the table still
gets each input row exactly once, in one snapshot tagged with the run.
"""

from __future__ import annotations

import uuid

import pytest

from support import make_tempdir, start_postgres, stop_process

from .clusterlib import (CHART, CI_VALUES, E2E_VALUES, ROW_KEY, S3_CREDENTIALS, fullname, log, manifest_of,
                         slow_model_values, values_args, workers_deleted_mid_run, write_input)

SHARDS = 10


@pytest.fixture(scope="module")
def postgres_on_host(target):
    """PostgreSQL on the address pods reach the host at, with a password for clients other than loopback."""
    server = start_postgres(make_tempdir("e2e-postgres-"), target.host_address)
    log(f"PostgreSQL on the host at {server.address}:{server.port}")
    yield server
    stop_process(server.process)


def test_an_iceberg_table_on_postgresql_and_s3_gets_each_row_once_though_workers_are_deleted_mid_run(
        kube, helm, s3, s3_namespace, postgres_on_host, monkeypatch):
    ns = s3_namespace.name
    database = f"lake_{uuid.uuid4().hex[:8]}"
    local_uri = postgres_on_host.database(database)
    kube.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lake-catalog", "namespace": ns},
                 "stringData": {"uri": postgres_on_host.uri_from(database)}}])
    data = write_input(s3, ns, "input", shards=SHARDS, rows=2000)
    sets = {"objectStore.endpoint": s3.endpoint,
            "icebergCatalog.name": "lake", "icebergCatalog.uriSecret.name": "lake-catalog",
            "icebergCatalog.warehouse": f"s3://{ns}/warehouse",
            "icebergCatalog.properties": {"s3.endpoint": s3.endpoint},
            "job.input": data.uri, "job.output": "iceberg://lake/scores.taxi", "job.keyColumns": [ROW_KEY],
            "job.batchSize": 500, **slow_model_values(delay=1.5)}
    helm("install", "lake", str(CHART), "-n", ns,
         *values_args([CI_VALUES / "cpu-values.yaml", E2E_VALUES / "local-cluster.yaml"], sets))
    table_prefix = "warehouse/scores/taxi"
    workers = workers_deleted_mid_run(kube, s3, ns, fullname("lake"), table_prefix)

    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    from pyiceberg.catalog.sql import SqlCatalog

    table = SqlCatalog("lake", uri=local_uri, warehouse=f"s3://{ns}/warehouse",
                       **{"s3.endpoint": s3.endpoint}).load_table("scores.taxi")
    rows = table.scan().to_arrow()
    ids = rows.column(ROW_KEY).to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows are in the table more than once"
    assert set(ids) == set(data.passengers), "the table's rows are not the input's"
    scores = dict(zip(ids, rows.column("score").to_pylist(), strict=True))
    wrong = [i for i, count in data.passengers.items() if scores[i] != (count % 2 == 0)]
    assert not wrong, f"{len(wrong)} rows have another score than the model's, e.g. row_id {wrong[:5]}"
    manifest = manifest_of(s3, ns, table_prefix)
    (snapshot,) = table.snapshots()
    assert snapshot.summary["shardscore.run-id"] == manifest["run_id"] and manifest["status"] == "succeeded"
    after = {s["worker"]["hostname"] for s in manifest["shards"]}
    assert after - set(workers), f"no shard was scored by a worker started after the deletion: {after}"
    log(f"exact: {len(ids)} rows in the Iceberg table scores.taxi (snapshot {snapshot.snapshot_id}), scored by "
        f"{sorted(after)}; the deleted workers were {workers}")
