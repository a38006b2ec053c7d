"""Reads tables with Apache Spark, an engine independent of the libraries shardscore writes them with: Iceberg's
Spark runtime and Delta Lake's reference implementation (delta-spark), fetched by Spark from Maven Central into
~/.ivy2 on first use. Run as `python spark_read.py '<json list of reads>'` (a process of its own: the JVM stays out
of pytest's); each read is {"format": "iceberg"|"delta", "path": ..., "options": {...}, "where": <Spark SQL filter>,
"columns": [...] (default id and score)}. Prints, as its last line, a JSON list of [[<columns>], ...] per read, in
order."""

from __future__ import annotations

import json
import sys

#: Spark 3.5 (pyspark in requirements-dev.lock) with the runtimes built for it.
PACKAGES = "org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:1.10.1,io.delta:delta-spark_2.12:3.3.2"


def session(**conf: str):
    """A local Spark with Delta's and Iceberg's SQL extensions (row-level DELETE included), and `conf`."""
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master("local[1]").config("spark.jars.packages", PACKAGES)
               .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension,"
                                               "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
               .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
               .config("spark.sql.shuffle.partitions", "1").config("spark.ui.enabled", "false"))
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def main(reads: list[dict]) -> None:
    spark = session()
    results = []
    for read in reads:
        # An Iceberg table by its metadata file (Iceberg's HadoopTables loads a *.metadata.json path as it is).
        frame = spark.read.format(read["format"]).options(**read.get("options", {})).load(read["path"])
        if read.get("where"):
            frame = frame.where(read["where"])
        columns = read.get("columns", ["id", "score"])
        results.append(sorted([row[c] for c in columns] for row in frame.select(*columns).collect()))
    spark.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
