"""Before anything is scored into an existing table: the model's predictions against the table's columns.

A table's schema is fixed before the run, so predictions that do not fit it are known to fail every shard. The
model, already loaded in the driver (checks.check), scores the first rows of the first shard there as a worker would
(scoring.first_predictions), and the answer is held against the table's columns with the rule every shard meets
(schema_rule.misfit): a misfit is refused before Ray, naming each column and both types.
"""

from __future__ import annotations

import sys

from .checks import Checked
from .errors import ConfigError
from .schema_rule import misfit
from .scoring import ScoringJob, first_predictions

#: Rows the driver scores: enough for a model that looks at more than one row, few enough to be instant.
ROWS = 16


def needed(checked: Checked) -> bool:
    """Whether the output is a table that exists (a new one takes the predictions' columns)."""
    return checked.table is not None and bool(checked.table.schema_gate().text)


def refuse_unfit(checked: Checked, job: ScoringJob) -> None:
    """Raise ConfigError when the predictions do not fit the table. A model that cannot answer in the driver (its
    device, these rows) leaves the check to the workers' gate, said on stderr."""
    assert checked.table is not None
    gate = checked.table.schema_gate()
    shard = next((s for s in checked.plan.shards if s.num_rows), None)
    if shard is None:
        return
    try:
        predictions = first_predictions(shard, checked.scorer, job, ROWS)
    except Exception as exc:  # noqa: BLE001 - any failure here is the workers' to report, shard by shard
        print(f"shardscore: warning: the model's first predictions could not be made in the driver to check them "
              f"against {gate.fixed_by} ({type(exc).__name__}: {exc}); each shard is checked as it is scored",
              file=sys.stderr, flush=True)
        return
    why = misfit(predictions, gate.text, gate.fixed_by)
    if why:
        raise ConfigError(f"--output {checked.cfg.output}: the model's predictions for the first rows of "
                          f"{checked.input.display(shard.path)} do not fit the existing table: {why}. Nothing was "
                          "scored; give a new table, or one whose columns the predictions fit")
