"""The run's manifest: what a run did, shard by shard and in total, written beside the predictions. The CLI's
summary and `--summary-json` are read from it."""

from __future__ import annotations

import platform
import time
from functools import cache
from importlib import metadata
from typing import Any

from . import __version__
from . import model as model_mod
from .checks import Checked
from .commit import Reconciliation, ShardResult
from .planning import listed


@cache
def versions() -> dict[str, str]:
    """Versions of what made the output (read from package metadata: importing pandas would cost seconds)."""
    found = {"shardscore": __version__, "python": platform.python_version()}
    for name in ("ray", "pyarrow", "pandas", "numpy", "torch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def build(checked: Checked, rec: Reconciliation, results: list[ShardResult], run_id: str, started: float,
          timings: dict[str, float], status: str) -> dict[str, Any]:
    """The manifest of a run that found `rec` and produced `results`."""
    cfg = checked.cfg
    shards = sorted([*rec.done, *results], key=lambda r: r.shard_id)
    committed = [r for r in shards if r.committed]
    failures = [r for r in shards if not r.committed]
    return {
        "status": status,
        "shardscore_version": __version__,
        "input": cfg.input,
        **({"input_table": checked.source.manifest_entry()} if checked.source else {}),
        "output": cfg.output,
        **cfg.given_paths().record(),  # the logical time, and --input and --output before it filled them
        "model": {"spec": cfg.model, "args": cfg.model_args, "identity": checked.scorer.identity,
                  "batch_format": checked.scorer.batch_format, "columns": checked.scorer.columns,
                  "sources": len(model_mod.model_sources(cfg.model.partition(":")[0]))},
        "prediction_schema": next((r.prediction_schema for r in committed if r.prediction_schema), ""),
        "options": {"strategy": cfg.strategy, "num_cpus_per_worker": cfg.num_cpus_per_worker,
                    "num_gpus_per_worker": cfg.num_gpus_per_worker, "device": cfg.device,
                    "batch_size": cfg.batch_size, "overlap": cfg.overlap, "max_rows_per_shard": cfg.max_rows_per_shard,
                    "key_columns": cfg.key_columns, "max_failed_shards": cfg.max_failed_shards,
                    "max_bad_rows": cfg.max_bad_rows, "batch_timeout": cfg.batch_timeout},
        "versions": versions(),
        "run_id": run_id,
        "started_at": started,
        "finished_at": time.time(),
        "seconds": _seconds(checked.seconds, started, timings),
        "totals": _totals(rec, shards, results, timings["scoring"]),
        "input_fingerprints": {s.relpath: s.fingerprint for s in checked.plan.shards},
        "ignored_files": listed(checked.plan.ignored),
        "warnings": [f"symbolic link {loop} not followed: it loops" for loop in checked.plan.loops],
        "shards": [r.to_dict() for r in shards],
        "failures": [{"shard_id": r.shard_id, "path": r.input_path, "reason": r.reason} for r in failures],
    }


def _seconds(before: dict[str, float], started: float, timings: dict[str, float]) -> dict[str, Any]:
    return {"total": round(time.time() - started, 3), "ray_init": round(timings["ray_init"], 3),
            "scoring": round(timings["scoring"], 3),
            "breakdown": {**before, **{k: round(v, 3) for k, v in timings.items()}}}


def _totals(rec: Reconciliation, shards: list[ShardResult], results: list[ShardResult],
            scoring: float) -> dict[str, Any]:
    committed = [r for r in shards if r.committed]
    rows_new = sum(r.rows_in for r in results if r.committed)
    return {
        "shards": len(shards), "committed": len(committed), "failed": len(shards) - len(committed),
        "skipped_already_committed": len(rec.done), "recomputed_stale": len(rec.stale),
        "rescored_damaged": len(rec.damaged), "removed_orphans": len(rec.orphans),
        "zero_row_shards": sum(1 for r in committed if not r.output),
        "rows_in": sum(r.rows_in for r in committed), "rows_out": sum(r.rows_out for r in committed),
        "rows_rejected": sum(r.rows_rejected for r in committed),
        "shards_with_rejected_rows": sum(1 for r in committed if r.rows_rejected),
        "rows_scored_this_run": rows_new,
        "rows_per_second_this_run": round(rows_new / scoring, 1) if scoring > 0 else None,
    }
