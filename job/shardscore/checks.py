"""Everything checked before anything is written, for `plan` and `run` alike: options, input, output, model.

`check` returns what the checks learnt (`Checked`). The refusals here need the plan or the model (options alone are
checked by config.RunConfig.validate): an output that overlaps the input, input reached through a link into the
output, columns the input lacks, key columns named like partition keys. Each names the option or file at fault and
the fix.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from . import model as model_mod
from .commit import ShardResult, failed
from .config import RunConfig
from .errors import ConfigError, InputError
from .delta import DeltaSource, DeltaTarget, is_delta
from .iceberg import IcebergInput, IcebergTable, is_table
from .output import FOLDER, TABLE
from .planning import Plan, partition_clashes, partition_keys, plan
from .storage import Location, StorageOptions, ancestry, identity, require_credentials, resolve


@dataclass(frozen=True)
class Checked:
    """What `plan` and `run` both know once the options, the input and the model are checked; nothing is written."""

    cfg: RunConfig
    input: Location
    output: Location | None
    table: IcebergTable | DeltaTarget | None  # when --output names a table: its handle (output.location is its)
    source: IcebergInput | DeltaSource | None  # when --input names a table: its snapshot or version and data files
    scorer: model_mod.Scorer
    plan: Plan
    problems: list[ShardResult]  # input files that fail before any worker sees them
    seconds: dict[str, float]  # where the time before scoring went (the manifest's breakdown)

    @property
    def output_kind(self) -> str:
        return TABLE if self.table is not None else FOLDER


def check(cfg: RunConfig, need_output: bool = True) -> Checked:
    """Validate options, reach the input, load the model, plan the shards; refuse what cannot run."""
    cfg.validate(need_output=need_output)
    clock = Stopwatch()
    storage = StorageOptions(cfg.s3_endpoint)
    in_loc, source = input_location(cfg.input, storage)
    out_loc, table = output_location(cfg.output, storage) if cfg.output else (None, None)
    given = cfg.given_paths()
    require_credentials(in_loc, f"--input {cfg.input}")
    if out_loc is not None:
        require_credentials(out_loc, f"--output {cfg.output}")
        refuse_overlap(in_loc, out_loc, given.origin("--input") + given.origin("--output"))
    scorer = model_mod.load(model_mod.ModelSpec(cfg.model, cfg.model_args))
    clock.lap("model")
    required = None if scorer.columns is None else list(dict.fromkeys([*scorer.columns, *cfg.key_columns]))
    try:
        the_plan = plan(in_loc, cfg.max_rows_per_shard, columns=required, only=source.files if source else None)
    except InputError as exc:  # a logical time whose partition is missing or empty: name the template too
        raise InputError(f"{exc}{given.origin('--input')}") from exc
    if out_loc is not None:
        refuse_inputs_under_output(the_plan, in_loc, out_loc)
    if table is not None:
        table.plan_partitions(cfg.partition_table, [s.relpath for s in the_plan.shards])
    elif cfg.partition_table and out_loc is not None:
        raise ConfigError(f"--partition-table: --output {cfg.output} is a folder, whose files keep the input's folders "
                          "anyway; the option partitions a table output (iceberg://, delta+)")
    clock.lap("plan")
    refuse_missing_columns(cfg, scorer, the_plan)
    problems = [failed(b.shard_id, in_loc.display(b.path), b.reason) for b in the_plan.bad_files]
    problems += [failed(s.shard_id, in_loc.display(s.path), the_plan.schema_mismatches[s.shard_id])
                 for s in the_plan.shards if s.shard_id in the_plan.schema_mismatches]
    return Checked(cfg, in_loc, out_loc, table, source, scorer, the_plan, problems, clock.laps)


def input_location(uri: str, storage: StorageOptions) -> tuple[Location, IcebergInput | DeltaSource | None]:
    """Where the input's files are: a folder's (or a file's) own URI, or a table's location with the data files of
    its snapshot (Iceberg) or version (Delta)."""
    source = IcebergInput(uri) if is_table(uri) else DeltaSource(uri, storage) if is_delta(uri) else None
    return resolve(source.location if source else uri, storage), source


def output_location(uri: str, storage: StorageOptions) -> tuple[Location, IcebergTable | DeltaTarget | None]:
    """Where an output's files are: a folder's own URI, or a table's location (an Iceberg table's found in its
    catalog), with the table's handle."""
    table = IcebergTable(uri) if is_table(uri) else DeltaTarget(uri, storage) if is_delta(uri) else None
    return resolve(table.location if table else uri, storage), table


class Stopwatch:
    """Named laps of wall time, for the manifest's breakdown of where a run's fixed time goes."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, 3)
        self._last = now


def refuse_overlap(inp: Location, out: Location, origin: str = "") -> None:
    """Output and input must not be one place or inside each other, however they are spelled or mounted (storage.
    Location.contains): predictions written into the input would replace its files or be read back as input by the
    next run. `origin` names the templates the paths were filled from, if any."""
    inside, holds = inp.contains(out), out.contains(inp)
    if inside or holds:
        how = "is" if inside and holds else ("lies inside" if inside else "contains")
        same = (f" (both are {out.canonical[1]})" if inp.canonical == out.canonical
                else " (one directory under two paths: a bind mount, or one volume mounted twice)")
        raise ConfigError(f"--output {out.uri} {how} the input {inp.uri}" + (same if how == "is" else "") + origin
                          + ": predictions would replace or mix with the data. Choose an output outside the input.")


def refuse_inputs_under_output(plan_: Plan, inp: Location, out: Location) -> None:
    """No planned input file may lie under the output, also one reached through a link inside the input (`in/x ->
    ../out/`): the run would score its own predictions, or rewrite the file it reads. Local disks only (object
    stores have no links, and the roots were compared already)."""
    if not (inp.is_local and out.is_local):
        return
    root = identity(out.path)
    if root is None:
        return  # nothing lies under an output that does not exist yet
    verdicts: dict[str, bool] = {}
    for path in [*(s.path for s in plan_.shards), *(b.path for b in plan_.bad_files)]:
        folder = os.path.dirname(os.path.realpath(path))
        if folder not in verdicts:
            verdicts[folder] = root in ancestry(folder)
        if verdicts[folder]:
            raise ConfigError(f"input file {inp.display(path)} lies under the --output {out.uri} (it is "
                              f"{os.path.realpath(path)}): the run would read what it writes. Remove the link, "
                              "or choose an output outside everything the input reaches.")


def refuse_missing_columns(cfg: RunConfig, scorer: model_mod.Scorer, the_plan: Plan) -> None:
    """Columns absent from the dataset as a whole: an option error, not N shard errors."""
    if the_plan.schema is None:
        return
    names = the_plan.schema.names
    missing_keys = [c for c in cfg.key_columns if c not in names]
    if missing_keys:
        raise ConfigError(f"--key-columns: {missing_keys} not in the input's columns {names}")
    _refuse_partition_keys(cfg.key_columns, the_plan)
    missing_model = [c for c in scorer.columns or [] if c not in names]
    if missing_model:
        raise ConfigError(f"--model {cfg.model} reads columns {missing_model} that the input does not have "
                          f"(its columns: {names})")
    try:
        scorer.check_input(the_plan.schema)
    except ValueError as exc:
        raise ConfigError(f"--model {cfg.model}: {exc}") from None


def _refuse_partition_keys(key_columns: list[str], the_plan: Plan) -> None:
    """A key column named like a partition key of the input's folders would make the output unreadable or lie
    (planning.partition_clashes): refused before anything runs."""
    clashes = partition_clashes(key_columns, partition_keys(s.relpath for s in the_plan.shards))
    if clashes:
        column, folder = clashes[0]
        raise ConfigError(f"--key-columns: {column!r} is named like the partition key of the input's folder {folder}, "
                          "which the output keeps: readers would take the column for the partition key (pyarrow and "
                          "pandas refuse to read such an output, DuckDB returns the folder's value in its place). "
                          "Leave it out of --key-columns: readers get it from the folder names")
