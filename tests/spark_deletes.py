"""Makes tables with row-level deletes, which shardscore's writers never make, with Apache Spark (spark_read.session):
Iceberg v2 tables (a Hadoop catalog under <root>/iceberg) whose DELETE writes a position delete file
(merge-on-read), and Delta tables (under <root>) whose DELETE writes a deletion vector; each as it is (`deleted`) and
compacted as shardscore's refusal advises (`compacted`: Iceberg's rewrite_data_files, Delta's REORG TABLE ... APPLY
(PURGE)). Every table holds ids 0..99 but 7. Run as `python spark_deletes.py <root>`; prints, as its last line,
{"deleted": {"iceberg": <metadata file>, "delta": <location>}, "compacted": {...}}."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spark_read import session

ROWS = ", ".join(f"({i}, {i * 0.5})" for i in range(100))


def main(root: Path) -> None:
    spark = session(**{"spark.sql.catalog.hadoop": "org.apache.iceberg.spark.SparkCatalog",
                       "spark.sql.catalog.hadoop.type": "hadoop",
                       "spark.sql.catalog.hadoop.warehouse": str(root / "iceberg")})
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
    spark.stop()
    print(json.dumps(made))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
