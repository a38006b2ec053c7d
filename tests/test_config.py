"""Options: precedence of flags, environment and YAML file; every bad value named."""

from pathlib import Path

import pytest

from datasets import sample
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
    with pytest.raises(ConfigError, match="--model-arg 'oops': expected KEY=VALUE"):
        load({"model_args": ["oops"]}, env={})


def test_sizes():
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("512Mi") == 512 * 2**20 and parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("lots")


# ---------------------------------------------------------------- a --config file's values judged as the flags' are
@pytest.mark.parametrize("line,message", [
    ("batch_size: true", "option batch_size: invalid value 'true' for batch_size (expected a whole number)"),
    ("batch_size: 2.9", "option batch_size: invalid value '2.9' for batch_size (expected a whole number)"),
    ("max_retries: [1]", "option max_retries: invalid value, a list ([1]): expected a single value"),
    ("grace_period: soon", "option grace_period: invalid value 'soon' for grace_period (expected a number)"),
    ("num_gpus_per_worker: true", "option num_gpus_per_worker: invalid value 'true'"),
    ("overwrite: 2", "option overwrite: invalid value '2' for overwrite (expected a boolean"),
    ("overwrite: {a: 1}", "option overwrite: invalid value, a mapping ({a: 1})"),
    ("key_columns: {id: 1}", "option key_columns: invalid value, a mapping ({id: 1}): expected a single value or a "
                             "list of them"),
    ("key_columns: [[id]]", "option key_columns: invalid value, a list ([[id]])"),
    ("strategy: 3", "option strategy: invalid value '3' for strategy (choose one of tasks, actors)"),
    ("device: [cpu]", "option device: invalid value, a list ([cpu])"),
    ("input: [a, b]", "option input: invalid value, a list ([a, b])"),
    ("output: {x: 1}", "option output: invalid value, a mapping ({x: 1})"),
    ("memory_per_worker: true", "option memory_per_worker: invalid value 'true'"),
    ("model_args: 5", "option model_args: invalid value '5' for model_args ('5': expected KEY=VALUE)"),
])
def test_a_config_file_value_of_the_wrong_type_is_refused_naming_key_and_value(tmp_path: Path, line, message):
    (tmp_path / "c.yaml").write_text(f"input: {tmp_path}\noutput: {tmp_path / 'out'}\nmodel: m:f\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load({}, env={}, config_file=str(tmp_path / "c.yaml"))
    assert message in str(info.value)


def test_a_config_file_value_reaches_the_cli_as_exit_2_without_traceback(cli, tmp_path: Path):
    (tmp_path / "c.yaml").write_text("batch_size: 2.9\n")
    r = cli("run", "--config", str(tmp_path / "c.yaml"), "--input", str(tmp_path), "--output", str(tmp_path / "o"),
            "--model", "shardscore.models.dummy:load_model")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "option batch_size: invalid value '2.9' for batch_size (expected a whole number)" in r.stderr


def test_config_file_values_of_every_type_are_read_as_the_flags_read_them(tmp_path: Path):
    (tmp_path / "c.yaml").write_text(
        "batch_size: 100\nnum-gpus-per-worker: 0.5\noverwrite: yes\nkey_columns: [vendor_id, pickup_at]\n"
        "strategy: actors\ninput: /data/in\nmemory_per_worker: 2GiB\npool:\nmax_in_flight: ~\n"
        "model_args: {version: 1.10, n: 8, lr: 0.5, name: '010', tags: [a, 1]}\n")
    cfg = load({}, env={}, config_file=str(tmp_path / "c.yaml"))
    assert (cfg.batch_size, cfg.num_gpus_per_worker, cfg.overwrite, cfg.strategy) == (100, 0.5, True, "actors")
    assert cfg.key_columns == ["vendor_id", "pickup_at"] and cfg.input == "/data/in"
    assert cfg.memory_per_worker == 2 * 2**30 and cfg.pool is None and cfg.max_in_flight is None
    assert cfg.model_args == {"version": "1.10", "n": 8, "lr": 0.5, "name": "010", "tags": ["a", 1]}
    (tmp_path / "k.yaml").write_text("key_columns: vendor_id, pickup_at\n")
    assert load({}, env={}, config_file=str(tmp_path / "k.yaml")).key_columns == ["vendor_id", "pickup_at"]


# ---------------------------------------------------------------- --model-arg values YAML would rewrite
def test_model_arg_numbers_that_would_not_read_back_as_typed_stay_text():
    items = ["version=1.10", "code=010", "mask=0x1f", "big=1_000", "clock=1:20", "n=8", "neg=-3", "lr=0.5",
             "one=1.0", "eps=1.0e-3", "flag=true", "off=no", "quoted='8'", "none=null"]
    assert load({"model_args": items}, env={}).model_args == {
        "version": "1.10", "code": "010", "mask": "0x1f", "big": "1_000", "clock": "1:20", "n": 8, "neg": -3,
        "lr": 0.5, "one": 1.0, "eps": 0.001, "flag": True, "off": False, "quoted": "8", "none": None}
    env = {"SHARDSCORE_MODEL_ARGS": "version=1.10,n=8"}
    assert load({}, env=env).model_args == {"version": "1.10", "n": 8}


def test_a_model_arg_that_is_not_yaml_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"--model-arg '\[1, 2' is not a YAML value: quote it as a string"):
        load({"model_args": ["xs=[1, 2"]}, env={})


# ---------------------------------------------------------------- --key-columns naming a column twice
@pytest.mark.parametrize("command,columns", [("run", "vendor_id,vendor_id"), ("plan", "vendor_id,pickup_at, vendor_id")])
def test_a_key_column_given_twice_is_refused_at_option_validation(cli, tmp_path: Path, command, columns):
    r = cli(command, "--input", str(sample(tmp_path / "in", shards=1, rows=10)), "--output", str(tmp_path / "out"),
            "--model", "shardscore.models.dummy:load_model", "--key-columns", columns)
    assert r.returncode == 2, r.stderr
    assert f"--key-columns {columns.replace(' ', '')}: vendor_id given more than once" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
