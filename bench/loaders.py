"""The shipped loaders against their library's own batch predict, one worker each (bench/run.py `loaders`).

`python loaders.py train INPUT MODELS` fits a scikit-learn pipeline, an XGBoost and a LightGBM model on the first
file and writes them, with an ONNX graph, the pipeline as an MLflow model, and a small transformers text classifier
with random weights (and its input: reviews, TEXT_SHARDS files of TEXT_ROWS texts), into MODELS; it prints each
loader's `--model` and `--model-arg`s, and its input where it is not INPUT, as JSON.
`python loaders.py bare NAME INPUT OUTPUT MODELS` is the library alone, as a user would write it without shardscore:
one process, file by file, the columns read as Arrow, the library's predict on 65,536-row batches, Parquet out.
It prints one JSON line: rows, the seconds of the batches (`scoring_s`) and of the import and load before them
(`load_s`).
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
#: name -> (factory, the model-arg that names the artifact, the artifact under MODELS, more model-args)
LOADERS = {"scikit-learn": ("shardscore.models.sklearn_model:load_model", "path", "pipeline.joblib",
                            ["method=predict_proba"]),
           "XGBoost": ("shardscore.models.xgboost_model:load_model", "path", "xgb.ubj", []),
           "LightGBM": ("shardscore.models.lightgbm_model:load_model", "path", "gbm.txt", []),
           "ONNX": ("shardscore.models.onnx_model:load_model", "path", "linear.onnx", [f"columns={','.join(FEATURES)}"]),
           "MLflow (scikit-learn pyfunc)": ("shardscore.models.mlflow_model:load_model", "uri", "mlflow-pipeline", []),
           "transformers (text classification)": ("shardscore.models.hf_model:load_model", "path", "classifier",
                                                  ["column=review", "batch_size=64"])}
TEXTS = "texts"  # the transformers loader's input, under MODELS
TEXT_SHARDS, TEXT_ROWS = 12, 4000
WORDS = ["good", "bad", "fine", "slow", "fast", "cold", "warm", "great", "awful", "driver", "ride", "car", "late",
         "early", "clean", "dirty", "tip", "fare", "route", "night"]


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
    _mlflow_pipeline(joblib.load(root / "pipeline.joblib"), X, root / "mlflow-pipeline")
    _text_classifier(root / "classifier", root / TEXTS)
    return {name: {"model": [spec, f"{arg}={root / file}", *args],
                   "input": str(root / TEXTS) if file == "classifier" else None}
            for name, (spec, arg, file, args) in LOADERS.items()}


def _mlflow_pipeline(model, X, path: Path) -> None:
    import shutil

    import mlflow.sklearn
    from mlflow.models import infer_signature

    shutil.rmtree(path, ignore_errors=True)
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)),
                              serialization_format="pickle")


def _text_classifier(path: Path, texts: Path) -> None:
    """A small BERT with random weights and its own vocabulary (nothing from the Hub), and reviews to classify."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(
        vocab_size=5 + len(WORDS), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=64, num_labels=2)).save_pretrained(path)
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    texts.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for shard in range(TEXT_SHARDS):
        reviews = [" ".join(rng.choice(WORDS, size=rng.integers(3, 24))) for _ in range(TEXT_ROWS)]
        pq.write_table(pa.table({"review": reviews}), texts / f"part-{shard:05d}.parquet")


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
    if name.startswith("MLflow"):
        import mlflow.pyfunc

        pyfunc = mlflow.pyfunc.load_model(str(models / "mlflow-pipeline"))
        return lambda batch: {"prediction": np.asarray(pyfunc.predict(batch.to_pandas()))}
    if name.startswith("transformers"):
        import transformers

        pipe = transformers.pipeline("text-classification", model=str(models / "classifier"), device=-1)

        def classify(batch: pa.RecordBatch) -> dict[str, list]:
            answers = pipe(batch.column("review").to_pylist(), batch_size=64, truncation=True)
            return {"label": [a["label"] for a in answers], "score": [a["score"] for a in answers]}

        return classify
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
    """Two clocks: the batches alone (`scoring_s`), and the library's import and the model's load before them
    (`load_s`): where shardscore's worker loads its model inside its loop, the first is stricter than fair."""
    started, rows = time.monotonic(), 0
    predict = _predictor(name, Path(models))
    columns = ["review"] if name.startswith("transformers") else FEATURES
    os.makedirs(output_dir, exist_ok=True)
    loaded = time.monotonic()
    for path in sorted(Path(input_dir).glob("*.parquet")):
        writer = None
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=columns):
            table = pa.table(predict(batch))
            writer = writer or pq.ParquetWriter(Path(output_dir) / path.name, table.schema, compression="zstd")
            writer.write_table(table)
            rows += batch.num_rows
        if writer:
            writer.close()
    return {"rows": rows, "scoring_s": time.monotonic() - loaded, "load_s": loaded - started}


if __name__ == "__main__":
    if sys.argv[1] == "train":
        print(json.dumps(train(*sys.argv[2:])))
    else:
        print(json.dumps(bare(*sys.argv[2:])))
