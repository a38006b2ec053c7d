"""Options: precedence of flags, environment and YAML file; every bad value named."""

from pathlib import Path

import pytest

from shardscore.config import RunConfig, load, parse_size
from shardscore.errors import ConfigError


def test_precedence_flags_then_env_then_file_then_defaults(tmp_path: Path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("input: /from/file\noutput: /out\nmodel: m:f\nstrategy: actors\nbatch-size: 10\n"
                        "model_args: {payload_mb: 3}\n")
    env = {"SHARDSCORE_STRATEGY": "tasks", "SHARDSCORE_NUM_GPUS_PER_WORKER": "0.5", "SHARDSCORE_BATCH_SIZE": "20"}
    cfg = load({"batch_size": "30"}, env=env, config_file=str(cfg_file))
    assert cfg.input == "/from/file"  # file only
    assert cfg.strategy == "tasks"  # env beats file
    assert cfg.batch_size == 30  # flag beats env and file
    assert cfg.num_gpus_per_worker == 0.5 and cfg.model_args == {"payload_mb": 3}
    assert cfg.num_cpus_per_worker == 1.0  # default


def test_model_args_are_typed():
    cfg = load({"model_args": ["payload_mb=8", "name=x", "flag=true"]}, env={})
    assert cfg.model_args == {"payload_mb": 8, "name": "x", "flag": True}


@pytest.mark.parametrize("changes,message", [
    ({"input": ""}, "--input is required"),
    ({"strategy": "threads"}, "--strategy 'threads'"),
    ({"device": "tpu"}, "--device 'tpu'"),
    ({"num_gpus_per_worker": -1}, "--num-gpus-per-worker -1"),
    ({"num_gpus_per_worker": 1.5}, "above 1 it must be whole"),
    ({"batch_size": 0}, "--batch-size 0: must be > 0"),
    ({"device": "cuda"}, "--device cuda needs --num-gpus-per-worker > 0"),
    ({"num_actors": 2}, "--num-actors applies to --strategy actors only"),
])
def test_bad_options_are_named(changes, message):
    cfg = RunConfig(input="/data/in", output="/data/out", model="m:f")
    for key, value in changes.items():
        setattr(cfg, key, value)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_bad_values_from_each_source_name_the_source(tmp_path: Path):
    with pytest.raises(ConfigError, match="environment variable SHARDSCORE_BATCH_SIZE"):
        load({}, env={"SHARDSCORE_BATCH_SIZE": "many"})
    (tmp_path / "c.yaml").write_text("bach_size: 3\n")
    with pytest.raises(ConfigError, match="unknown option 'bach_size'"):
        load({}, env={}, config_file=str(tmp_path / "c.yaml"))
    with pytest.raises(ConfigError, match="--model-arg 'oops'"):
        load({"model_args": ["oops"]}, env={})


def test_sizes():
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("512Mi") == 512 * 2**20 and parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("lots")
