"""The shipped loaders against their library's own batch predict, one worker each (bench/run.py `loaders`).

`python loaders.py train INPUT MODELS` fits a scikit-learn pipeline, an XGBoost and a LightGBM model on the first
file and writes them, with an ONNX graph, into MODELS; it prints the `--model` and `--model-arg`s of each as JSON.
`python loaders.py bare NAME INPUT OUTPUT MODELS` is the library alone, as a user would write it without shardscore:
one process, file by file, the features read as Arrow, the library's predict on 65,536-row batches, Parquet out.
It prints one JSON line: rows, and the seconds of the loop alone (`scoring_s`, models loaded and imports done).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as Ray gives a one-CPU task: before any library loads

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

FEATURES = ["passenger_count", "trip_distance", "fare_amount", "tip_amount", "tolls_amount"]
BATCH = 65536
LOADERS = {"scikit-learn": ("shardscore.models.sklearn_model:load_model", "pipeline.joblib", ["method=predict_proba"]),
           "XGBoost": ("shardscore.models.xgboost_model:load_model", "xgb.ubj", []),
           "LightGBM": ("shardscore.models.lightgbm_model:load_model", "gbm.txt", []),
           "ONNX": ("shardscore.models.onnx_model:load_model", "linear.onnx", [f"columns={','.join(FEATURES)}"])}


def train(input_dir: str, models: str) -> dict:
    import joblib
    import lightgbm as lgb
    import onnx
    import xgboost as xgb
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    first = sorted(Path(input_dir).glob("*.parquet"))[0]
    frame = pq.read_table(first, columns=[*FEATURES, "total_amount"]).to_pandas().head(200_000)
    X, label = frame[FEATURES], (frame["tip_amount"] > frame["fare_amount"] * 0.1).astype(int)
    root = Path(models)
    root.mkdir(parents=True, exist_ok=True)
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, label), root / "pipeline.joblib")
    xgb.XGBRegressor(n_estimators=50, max_depth=6).fit(X, frame["total_amount"]).save_model(root / "xgb.ubj")
    lgb.LGBMClassifier(n_estimators=50, num_leaves=31, verbose=-1).fit(X, label).booster_.save_model(root / "gbm.txt")
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["scores"])],
        "linear", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(FEATURES)])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(rng.normal(size=(len(FEATURES), 2)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.normal(size=2).astype(np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
              root / "linear.onnx")
    return {name: [spec, f"path={root / file}", *args] for name, (spec, file, args) in LOADERS.items()}


def _predictor(name: str, models: Path):
    """The library's own batch predict on an Arrow batch of the features, as its docs show it."""
    if name == "scikit-learn":
        import joblib

        model = joblib.load(models / "pipeline.joblib")
        return lambda batch: _columns("proba", model.predict_proba(batch.to_pandas()))
    if name == "XGBoost":
        import xgboost as xgb

        booster = xgb.Booster(model_file=str(models / "xgb.ubj"))
        return lambda batch: {"prediction": booster.inplace_predict(batch.to_pandas())}
    if name == "LightGBM":
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(models / "gbm.txt"))
        return lambda batch: {"prediction": booster.predict(batch.to_pandas())}
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(models / "linear.onnx"), sess_options=options)
    return lambda batch: _columns("scores", session.run(None, {"features": np.stack(
        [batch.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in FEATURES], axis=1)})[0])


def _columns(prefix: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """The same columns as shardscore writes for an answer of one value per class."""
    return {f"{prefix}_{i}": values[:, i] for i in range(values.shape[1])}


def bare(name: str, input_dir: str, output_dir: str, models: str) -> dict:
    predict = _predictor(name, Path(models))
    os.makedirs(output_dir, exist_ok=True)
    started, rows = time.monotonic(), 0
    for path in sorted(Path(input_dir).glob("*.parquet")):
        writer = None
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=FEATURES):
            table = pa.table(predict(batch))
            writer = writer or pq.ParquetWriter(Path(output_dir) / path.name, table.schema, compression="zstd")
            writer.write_table(table)
            rows += batch.num_rows
        if writer:
            writer.close()
    return {"rows": rows, "scoring_s": time.monotonic() - started}


if __name__ == "__main__":
    if sys.argv[1] == "train":
        print(json.dumps(train(*sys.argv[2:])))
    else:
        print(json.dumps(bare(*sys.argv[2:])))
