"""Apache Spark, an engine independent of the libraries shardscore writes tables with (Iceberg's Spark runtime and
Delta Lake's reference implementation, delta-spark, fetched by Spark from Maven Central into ~/.ivy2 on first use),
as one process serving a test module: a JVM's start and the runtimes' loading are most of a short Spark job.

Run as `python spark_tables.py <warehouse>`: one JSON request a line on stdin, one answer a line on stdout, after
REPLY. Whatever else prints (Spark's JVM, py4j) goes to stderr, so that the answer is the only line a request
brings: the caller waits on the pipe with select(), which cannot see lines already in its reader's buffer. Requests:
- {"read": [{"format": "iceberg"|"delta", "path": ..., "options": {...}, "where": <Spark SQL filter>,
  "columns": [...] (default id and score)}, ...]}: a list of [[<columns>], ...] per read, in order;
- {"deletes": <root>}: tables with row-level deletes, which shardscore's writers never make: Iceberg v2 tables (the
  Hadoop catalog in <warehouse>) whose DELETE writes a position delete file (merge-on-read), and Delta tables (under
  <root>) whose DELETE writes a deletion vector; each as it is (`deleted`) and compacted as shardscore's refusal
  advises (`compacted`: Iceberg's rewrite_data_files, Delta's REORG TABLE ... APPLY (PURGE)). Every table holds ids
  0..99 but 7. Answers {"deleted": {"iceberg": <metadata file>, "delta": <location>}, "compacted": {...}}.
A failed request answers {"error": <traceback>}."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

#: Spark 3.5 (pyspark in requirements-dev.lock) with the runtimes built for it.
PACKAGES = "org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:1.10.1,io.delta:delta-spark_2.12:3.3.2"
REPLY = "spark_tables: "
ROWS = ", ".join(f"({i}, {i * 0.5})" for i in range(100))


def session(warehouse: Path):
    """A local Spark with Delta's and Iceberg's SQL extensions (row-level DELETE included) and a Hadoop catalog."""
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master("local[1]").config("spark.jars.packages", PACKAGES)
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension,"
                                            "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
            .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
            .config("spark.sql.catalog.hadoop", "org.apache.iceberg.spark.SparkCatalog")
            .config("spark.sql.catalog.hadoop.type", "hadoop")
            .config("spark.sql.catalog.hadoop.warehouse", str(warehouse))
            .config("spark.sql.shuffle.partitions", "1").config("spark.ui.enabled", "false").getOrCreate())


def read(spark, reads: list[dict]) -> list:
    results = []
    for one in reads:
        # An Iceberg table by its metadata file (Iceberg's HadoopTables loads a *.metadata.json path as it is).
        frame = spark.read.format(one["format"]).options(**one.get("options", {})).load(one["path"])
        if one.get("where"):
            frame = frame.where(one["where"])
        columns = one.get("columns", ["id", "score"])
        results.append(sorted([row[c] for c in columns] for row in frame.select(*columns).collect()))
    return results


def deletes(spark, root: Path) -> dict:
    made = {}
    for kind in ("deleted", "compacted"):
        iceberg, delta = f"hadoop.ns.{kind}", root / kind
        spark.sql(f"CREATE TABLE {iceberg} (id BIGINT, fare DOUBLE) USING iceberg TBLPROPERTIES "
                  "('format-version'='2', 'write.delete.mode'='merge-on-read')")
        spark.sql(f"CREATE TABLE delta.`{delta}` (id BIGINT, fare DOUBLE) USING delta TBLPROPERTIES "
                  "('delta.enableDeletionVectors'='true')")
        for table in (iceberg, f"delta.`{delta}`"):
            spark.sql(f"INSERT INTO {table} VALUES {ROWS}")
            spark.sql(f"DELETE FROM {table} WHERE id = 7")
        if kind == "compacted":
            spark.sql(f"CALL hadoop.system.rewrite_data_files(table => 'ns.{kind}', "
                      "options => map('delete-file-threshold', '1'))")
            spark.sql(f"REORG TABLE delta.`{delta}` APPLY (PURGE)")
        metadata = spark.sql(f"SELECT file FROM {iceberg}.metadata_log_entries ORDER BY timestamp DESC LIMIT 1").first()
        made[kind] = {"iceberg": metadata["file"], "delta": str(delta)}
    return made


def main(warehouse: Path) -> None:
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the JVM, started by session(), inherits it
    sys.stdout = sys.stderr
    spark = session(warehouse)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = read(spark, request["read"]) if "read" in request else deletes(spark, Path(request["deletes"]))
        except Exception:  # noqa: BLE001 (the test shows it)
            answer = {"error": traceback.format_exc()}
        print(REPLY + json.dumps(answer), file=answers, flush=True)
    spark.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
