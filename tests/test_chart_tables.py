"""Issue 20 §4: the chart's values.icebergCatalog become pyiceberg's configuration of the catalog (env
PYICEBERG_CATALOG__<NAME>__*) in the head's Ray container, where the driver makes the table's commit, and nowhere
else; a URI with a password comes from a Secret, and values that pyiceberg could not use are refused."""

from __future__ import annotations

import json

import pytest

import chartlib as c
from chartlib import CPU, CRONJOB, EPHEMERAL

CATALOG = ["icebergCatalog.name=lake", "icebergCatalog.uriSecret.name=lake-catalog",
           "icebergCatalog.warehouse=s3://lake/warehouse", "icebergCatalog.properties.s3\\.endpoint=http://minio:9000",
           "icebergCatalog.properties.py-io-impl=pyiceberg.io.pyarrow.PyArrowFileIO",
           "job.output=iceberg://lake/scores.taxi"]


@pytest.mark.parametrize("values", [CPU, EPHEMERAL], ids=["cpu", "ephemeral"])
def test_the_catalog_reaches_the_head_container_alone_its_uri_from_the_secret(values):
    docs = c.render([values], CATALOG)
    containers = [(where, ctr) for where, pod in c.all_pod_specs(docs) for ctr in pod["containers"]]
    head = [ctr for where, ctr in containers if where.startswith("ray ") and "head" in where and
            ctr["name"] != "autoscaler"]
    assert len(head) == 1, [w for w, _ in containers]
    env = c.env_of(head[0])
    assert env["PYICEBERG_CATALOG__LAKE__URI"] == {
        "name": "PYICEBERG_CATALOG__LAKE__URI", "valueFrom": {"secretKeyRef": {"name": "lake-catalog", "key": "uri"}}}
    assert env["PYICEBERG_CATALOG__LAKE__WAREHOUSE"]["value"] == "s3://lake/warehouse"
    assert env["PYICEBERG_CATALOG__LAKE__S3__ENDPOINT"]["value"] == "http://minio:9000"
    assert env["PYICEBERG_CATALOG__LAKE__PY_IO_IMPL"]["value"] == "pyiceberg.io.pyarrow.PyArrowFileIO"
    others = [where for where, ctr in containers if ctr is not head[0] and
              any(e["name"].startswith("PYICEBERG_") for e in ctr.get("env", []))]
    assert not others, f"the catalog's configuration reached {others}"
    assert "iceberg://lake/scores.taxi" in c.entrypoint_argv(c.one(docs, "RayJob"))
    for doc in c.custom_resources(docs):
        assert not c.crd_errors(doc), doc["kind"]


def test_a_plain_uri_without_a_secret_and_no_catalog_by_default():
    head = c.one(c.render([CPU], ["icebergCatalog.name=rest", "icebergCatalog.uri=http://iceberg-rest:8181"]),
                 "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert c.env_of(head)["PYICEBERG_CATALOG__REST__URI"]["value"] == "http://iceberg-rest:8181"
    head = c.one(c.render([CPU]), "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert not [name for name in c.env_of(head) if name.startswith("PYICEBERG_")]


@pytest.mark.parametrize("sets, said", [
    (["icebergCatalog.name=lake"], "icebergCatalog"),  # a name and neither uri nor uriSecret
    (["icebergCatalog.name=lake", "icebergCatalog.uri=postgresql+psycopg2://u:secret@db/lake"], "uri"),
    (["icebergCatalog.name=my-lake", "icebergCatalog.uri=http://rest:8181"], "name"),
    (["icebergCatalog.name=lake", "icebergCatalog.uri=http://rest:8181", "icebergCatalog.properties.S3=x"],
     "properties"),
    (["icebergCatalog.name=lake", "icebergCatalog.uri=http://rest:8181", "icebergCatalog.password=x"], "password"),
])
def test_catalog_values_pyiceberg_could_not_use_are_refused_naming_the_field(sets, said):
    assert said in c.render_error([CPU], sets)


@pytest.mark.parametrize("output", ["iceberg://lake/scores.taxi", "delta+s3://lake/scores"])
def test_a_scheduled_table_output_needs_the_incremental_layout(output):
    """perTick would make each tick's output <table>/run=<time>, which names no table (k8s/tick.py, run_output)."""
    assert "scheduleLayout perTick: job.output is a table" in c.render_error([CRONJOB], [f"job.output={output}"])
    tick = c.tick_config(c.render([CRONJOB], [f"job.output={output}", "scheduleLayout=incremental"]))
    assert output in json.dumps(tick)
