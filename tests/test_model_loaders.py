"""The shipped loaders for the models teams already have (scikit-learn, XGBoost, LightGBM, ONNX): each scores on the
multi-node Ray cluster and gives, row for row, what the library's own predict gives in-process on the same rows;
each refuses a missing or foreign file, a missing package and columns the input lacks with exit 2, naming it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from datasets import drop_column, sample
from shardscore.model import ModelSpec, load
from support import ONE_WORKER

FEATURES = ["passenger_count", "trip_distance", "fare_amount", "tip_amount", "tolls_amount"]
LOADERS = {"sklearn": "shardscore.models.sklearn_model:load_model",
           "xgboost": "shardscore.models.xgboost_model:load_model",
           "lightgbm": "shardscore.models.lightgbm_model:load_model",
           "onnx": "shardscore.models.onnx_model:load_model"}


def _frame(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def _label(frame: pd.DataFrame) -> np.ndarray:
    return (frame["tip_amount"] > frame["fare_amount"] * 0.1).astype(int).to_numpy()


def _three_classes(frame: pd.DataFrame) -> np.ndarray:
    return np.digitize(frame["trip_distance"].to_numpy(), [2.0, 5.0])


def _onnx_models(root: Path) -> tuple[Path, Path]:
    """Two graphs as converters write them: a feature matrix through MatMul and Add (two outputs per row), and two
    named vector inputs added and multiplied (one output each)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = numpy_helper.from_array(rng.normal(size=(len(FEATURES), 2)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=2).astype(np.float32), "b")
    matrix = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["scores"])],
        "linear", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(FEATURES)])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 2])], [weights, bias])
    vectors = helper.make_graph(
        [helper.make_node("Add", ["trip_distance", "fare_amount"], ["total"]),
         helper.make_node("Mul", ["trip_distance", "fare_amount"], ["product"])],
        "named", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in ("trip_distance", "fare_amount")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in ("total", "product")])
    paths = root / "linear.onnx", root / "named.onnx"
    for graph, path in zip((matrix, vectors), paths, strict=True):
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The input, and per loader: the model file, its model args, and the library's own prediction on a frame."""
    import joblib
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("loaders")
    inp = sample(root / "in", shards=3, rows=3000)
    train = _frame(inp / "part-00000.parquet")
    X, y = train[FEATURES], _label(train)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    joblib.dump(pipeline, root / "pipeline.joblib")
    on_array = LinearRegression().fit(X.to_numpy(), train["total_amount"].to_numpy())
    joblib.dump(on_array, root / "on_array.pkl")
    regressor = xgb.XGBRegressor(n_estimators=20, max_depth=4).fit(X, train["total_amount"])
    regressor.save_model(root / "regressor.ubj")
    classes = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(X.to_numpy(), _three_classes(train))
    classes.save_model(root / "classes.json")
    gbm = lgb.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(X, y)
    gbm.booster_.save_model(root / "gbm.txt")
    booster_r, booster_c = xgb.Booster(model_file=str(root / "regressor.ubj")), classes.get_booster()
    native = lgb.Booster(model_file=str(root / "gbm.txt"))
    import onnxruntime as ort

    linear, vectors = _onnx_models(root)
    linear_s, vectors_s = ort.InferenceSession(linear), ort.InferenceSession(vectors)

    def linear_scores(f: pd.DataFrame) -> np.ndarray:
        return linear_s.run(None, {"features": f[FEATURES].to_numpy(np.float32)})[0]

    def named_answers(f: pd.DataFrame) -> dict:
        feed = {n: f[n].to_numpy(np.float32) for n in ("trip_distance", "fare_amount")}
        return dict(zip(("total", "product"), vectors_s.run(None, feed), strict=True))
    return {"input": inp, "root": root, "cases": {
        "sklearn pipeline, predict_proba": ("sklearn", [f"path={root / 'pipeline.joblib'}", "method=predict_proba"],
                                            lambda f: {"proba_0": pipeline.predict_proba(f[FEATURES])[:, 0],
                                                       "proba_1": pipeline.predict_proba(f[FEATURES])[:, 1]}),
        "sklearn on an array, columns=": ("sklearn", [f"path={root / 'on_array.pkl'}", f"columns={','.join(FEATURES)}"],
                                          lambda f: {"prediction": on_array.predict(f[FEATURES].to_numpy())}),
        "xgboost ubj regressor": ("xgboost", [f"path={root / 'regressor.ubj'}"],
                                  lambda f: {"prediction": booster_r.inplace_predict(f[FEATURES])}),
        "xgboost json, 3 classes, columns=": ("xgboost", [f"path={root / 'classes.json'}",
                                                          f"columns={','.join(FEATURES)}"],
                                              lambda f: {f"prediction_{i}": booster_c.inplace_predict(
                                                  f[FEATURES].to_numpy())[:, i] for i in range(3)}),
        "lightgbm text, binary": ("lightgbm", [f"path={root / 'gbm.txt'}"],
                                  lambda f: {"prediction": native.predict(f[FEATURES])}),
        "onnx feature matrix, columns=": ("onnx", [f"path={linear}", f"columns={','.join(FEATURES)}"],
                                          lambda f: {f"scores_{i}": linear_scores(f)[:, i] for i in range(2)}),
        "onnx inputs by name": ("onnx", [f"path={vectors}"], named_answers),
    }}


CASES = ["sklearn pipeline, predict_proba", "sklearn on an array, columns=", "xgboost ubj regressor",
         "xgboost json, 3 classes, columns=", "lightgbm text, binary", "onnx feature matrix, columns=",
         "onnx inputs by name"]


@pytest.mark.ray
@pytest.mark.parametrize("case", CASES)
def test_every_prediction_is_the_librarys_own(shardscore, trained: dict, tmp_path: Path, case: str):
    loader, args, reference = trained["cases"][case]
    out = tmp_path / "out"
    r = shardscore("run", "--input", str(trained["input"]), "--output", str(out), "--model", LOADERS[loader],
                   *[a for arg in args for a in ("--model-arg", arg)], "--key-columns", "vendor_id", *ONE_WORKER)
    assert r.returncode == 0, r.stderr[-3000:]
    for shard in sorted(trained["input"].glob("*.parquet")):
        got = pq.read_table(out / shard.name)
        frame = _frame(shard)
        assert got.column("vendor_id").to_pylist() == frame["vendor_id"].tolist()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the libraries' own notes on the frame they get
            expected = reference(frame)
        assert sorted(got.column_names) == sorted(["vendor_id", *expected]), got.column_names
        for name, values in expected.items():  # the same library on the same rows: the same numbers, exactly
            np.testing.assert_array_equal(got.column(name).to_numpy(), values, err_msg=f"{shard.name} {name}")


@pytest.mark.ray
def test_a_model_file_on_s3(shardscore, s3, trained: dict, tmp_path: Path):
    bucket = "models-loaders"
    s3.client().create_bucket(Bucket=bucket)
    s3.client().upload_file(str(trained["root"] / "gbm.txt"), bucket, "gbm/v1.txt")
    out = tmp_path / "out"
    r = shardscore("run", "--input", str(trained["input"]), "--output", str(out), "--model", LOADERS["lightgbm"],
                   "--model-arg", f"path=s3://{bucket}/gbm/v1.txt", *ONE_WORKER,
                   env={**s3.credentials, "AWS_ENDPOINT_URL": s3.endpoint})
    assert r.returncode == 0, r.stderr[-3000:]
    _, _, reference = trained["cases"]["lightgbm text, binary"]
    frame = _frame(trained["input"] / "part-00002.parquet")
    np.testing.assert_array_equal(pq.read_table(out / "part-00002.parquet").column("prediction").to_numpy(),
                                  reference(frame)["prediction"])


def test_the_model_file_is_in_the_model_identity(trained: dict, tmp_path: Path):
    """A retrained model under the same path is another model: its shards are stale, as with changed code."""
    import shutil

    path = tmp_path / "model.ubj"
    shutil.copy(trained["root"] / "regressor.ubj", path)
    before = load(ModelSpec(LOADERS["xgboost"], {"path": str(path)})).identity
    shutil.copy(trained["root"] / "classes.json", path)  # another model; names now needed
    after = load(ModelSpec(LOADERS["xgboost"], {"path": str(path), "columns": ",".join(FEATURES)})).identity
    assert before != after


def _refused(cli, trained: dict, tmp_path: Path, loader: str, *args: str, inp: Path | None = None) -> str:
    out = tmp_path / "out"
    r = cli("run", "--input", str(inp or trained["input"]), "--output", str(out), "--model", LOADERS[loader],
            *[a for arg in args for a in ("--model-arg", arg)])
    assert r.returncode == 2, r.stdout + r.stderr
    assert not out.exists() or not list(out.glob("*.parquet"))
    return r.stderr


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_missing_model_file_is_named(cli, trained: dict, tmp_path: Path, loader: str):
    err = _refused(cli, trained, tmp_path, loader, f"path={tmp_path / 'nowhere.bin'}")
    assert f"model file {tmp_path / 'nowhere.bin'} does not exist" in err, err


@pytest.mark.parametrize("loader,what", [("sklearn", "not a model saved by joblib.dump or pickle.dump"),
                                         ("xgboost", "not an XGBoost model saved by save_model"),
                                         ("lightgbm", "not a LightGBM model saved by save_model"),
                                         ("onnx", "not an ONNX model ONNX Runtime loads")])
def test_a_file_of_something_else_is_named(cli, trained: dict, tmp_path: Path, loader: str, what: str):
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"\x00\x01 not a model \xff" * 40)
    err = _refused(cli, trained, tmp_path, loader, f"path={junk}")
    assert f"model file {junk} is {what}" in err, err


@pytest.mark.parametrize("loader,file,dropped", [
    ("sklearn", "pipeline.joblib", "tolls_amount"), ("xgboost", "regressor.ubj", "tolls_amount"),
    ("lightgbm", "gbm.txt", "tolls_amount"), ("onnx", "named.onnx", "fare_amount")])
def test_a_feature_the_input_lacks_is_named_before_scoring(cli, trained: dict, tmp_path: Path, loader: str,
                                                            file: str, dropped: str):
    inp = sample(tmp_path / "in", shards=2, rows=50)
    for shard in inp.glob("*.parquet"):
        drop_column(shard, dropped)
    err = _refused(cli, trained, tmp_path, loader, f"path={trained['root'] / file}", inp=inp)
    assert f"reads columns ['{dropped}'] that the input does not have" in err, err


@pytest.mark.parametrize("loader,package", [("sklearn", "sklearn"), ("xgboost", "xgboost"),
                                            ("lightgbm", "lightgbm"), ("onnx", "onnxruntime")])
def test_a_missing_library_names_the_extra_to_install(cli, trained: dict, tmp_path: Path, loader: str,
                                                      package: str):
    shadow = tmp_path / "shadow"  # a module that fails to import, first on the path: the package as if absent
    shadow.mkdir()
    (shadow / f"{package}.py").write_text(f"raise ImportError('No module named {package}')\n")
    out = tmp_path / "out"
    r = cli("run", "--input", str(trained["input"]), "--output", str(out), "--model", LOADERS[loader],
            "--model-arg", "path=/nonexistent", env={"PYTHONPATH": str(shadow)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"needs the {package} package" in r.stderr and f"pip install 'shardscore[{loader}]'" in r.stderr, r.stderr


def test_a_model_trained_without_names_needs_columns(cli, trained: dict, tmp_path: Path):
    err = _refused(cli, trained, tmp_path, "xgboost", f"path={trained['root'] / 'classes.json'}")
    assert "the model was trained without feature names" in err and "columns=a,b,c" in err, err
    err = _refused(cli, trained, tmp_path, "sklearn", f"path={trained['root'] / 'on_array.pkl'}",
                   "columns=passenger_count,trip_distance")
    assert "the model takes 5 features, and columns= names 2" in err, err


def test_an_onnx_graph_is_fed_as_it_declares(cli, trained: dict, tmp_path: Path):
    root = trained["root"]
    err = _refused(cli, trained, tmp_path, "onnx", f"path={root / 'linear.onnx'}")
    assert "graph input 'features' takes a matrix of features; name the input columns" in err, err
    err = _refused(cli, trained, tmp_path, "onnx", f"path={root / 'linear.onnx'}", "columns=trip_distance")
    assert "graph input 'features' takes 5 features, and columns= names 1: trip_distance" in err, err
    err = _refused(cli, trained, tmp_path, "onnx", f"path={root / 'named.onnx'}", "outputs=total,ratio")
    assert "outputs ['ratio'] are not among its tensor outputs ['total', 'product']" in err, err
    err = _refused(cli, trained, tmp_path, "onnx", f"path={root / 'named.onnx'}", "device=cuda")
    assert "device=cuda: this ONNX Runtime has no CUDAExecutionProvider" in err, err


def test_a_method_the_estimator_lacks_is_named_with_those_it_has(cli, trained: dict, tmp_path: Path):
    err = _refused(cli, trained, tmp_path, "sklearn", f"path={trained['root'] / 'on_array.pkl'}",
                   f"columns={','.join(FEATURES)}", "method=predict_proba")
    assert "holds a LinearRegression, which has no predict_proba() (it offers: predict)" in err, err
