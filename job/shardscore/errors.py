"""Error types. Each one carries a message that names the thing at fault; the CLI prints it without a traceback."""


class ShardscoreError(Exception):
    """A problem the user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 2


class ConfigError(ShardscoreError):
    """An option is invalid (the message names the option and the value)."""


class InputError(ShardscoreError):
    """The input location is missing, empty or unreadable."""


class OutputError(ShardscoreError):
    """The output location cannot be written."""


class OutputUnwritable(OutputError):
    """The output stopped taking writes during the run (made read-only, the disk full): its manifest could not be
    written. `manifest` is the run's summary when it got that far, for the summary line and --summary-json."""

    exit_code = 1

    def __init__(self, message: str, manifest: dict | None = None):
        super().__init__(message)
        self.manifest = manifest


class StaleOutputError(ShardscoreError):
    """Existing output was made from other input files or another model; mixing them would be silent corruption."""


class ModelError(ShardscoreError):
    """The model spec cannot be imported or the factory failed."""


class RunAborted(ShardscoreError):
    """A worker cannot score at all (the model does not load there, or its device is missing): stop the run."""

    exit_code = 3


class InputChanged(RunAborted):
    """A shard's input file is not the one planned, or changed while it was read: the run's shards would mix two
    versions of the input, so the run stops (what it committed stays committed)."""


class PartitionColumnClash(RunAborted):
    """The model returns a column named like a Hive partition key of the input's folders: every shard would write an
    output that readers cannot read, so the run stops at the first one."""


class DeviceError(RunAborted):
    """The requested device is not there (for example `--device cuda` on a worker without CUDA)."""


class ShardError(Exception):
    """A shard failed for its own reason (corrupt, empty, missing column, wrong type, model error on its rows).

    Not retried: running it again gives the same answer. The run goes on with the other shards.
    """

    def __init__(self, shard_id: str, path: str, reason: str):
        super().__init__(f"shard {shard_id} ({path}): {reason}")
        self.shard_id = shard_id
        self.path = path
        self.reason = reason
