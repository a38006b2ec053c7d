"""The Hugging Face loader with tiny models built here with random weights (no Hub): text classification and
embeddings on the multi-node Ray cluster, equal to transformers' own answers in-process on the same texts, from a
local and an S3 directory; a null text rejected alone; bad directories and a missing library refused with exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import ONE_WORKER

SPEC = "shardscore.models.hf_model:load_model"
WORDS = "the a taxi ride was good bad late early cheap long short driver car city night day fare tip".split()
LABELS = {0: "neg", 1: "neu", 2: "pos"}


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A sequence classifier and a bare encoder, each saved with its tokenizer, and an input of reviews."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("hf")
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    config = dict(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=64, initializer_range=1.0)
    torch.manual_seed(1)  # a seed whose random weights tell these texts apart (three labels given)
    BertForSequenceClassification(BertConfig(**config, num_labels=3, id2label=LABELS,
                                             label2id={v: k for k, v in LABELS.items()})).save_pretrained(
        root / "classifier")
    BertModel(BertConfig(**config)).save_pretrained(root / "encoder")
    for name in ("classifier", "encoder"):
        tokenizer.save_pretrained(root / name)
    inp = root / "in"
    inp.mkdir()
    for shard in range(3):
        texts = _texts(150, shard)
        pq.write_table(pa.table({"id": list(range(shard * 1000, shard * 1000 + 150)), "review": texts}),
                       inp / f"part-{shard}.parquet")
    return {"root": root, "classifier": root / "classifier", "encoder": root / "encoder", "input": inp}


def _run(shardscore, models: dict, out: Path, *args: str, env: dict | None = None):
    r = shardscore("run", "--input", str(models["input"]), "--output", str(out), "--model", SPEC, "--key-columns", "id",
                   *ONE_WORKER, *[a for arg in args for a in ("--model-arg", arg)], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _reference_pipeline(path: Path, task: str):
    from transformers import pipeline

    return pipeline(task, model=str(path), tokenizer=str(path), device="cpu")


@pytest.mark.ray
def test_text_classification_is_the_pipelines_own(shardscore, models: dict, tmp_path: Path):
    _run(shardscore, models, tmp_path / "top", f"path={models['classifier']}", "column=review")
    _run(shardscore, models, tmp_path / "all", f"path={models['classifier']}", "column=review", "all_scores=true")
    pipe = _reference_pipeline(models["classifier"], "text-classification")
    labels = set()
    for shard in sorted(models["input"].glob("*.parquet")):
        texts = pq.read_table(shard).column("review").to_pylist()
        top = pq.read_table(tmp_path / "top" / shard.name)
        every = pq.read_table(tmp_path / "all" / shard.name)
        expected = [pipe(t)[0] for t in texts]  # one at a time: no padding at all
        assert top.column("label").to_pylist() == [e["label"] for e in expected]
        # Padded batches against one text at a time: the same float32 sums in another order. Near 0 a probability's
        # error is absolute (seen on an AVX2-only CPU: 2.8565e-4 against 2.8565e-4 + 3.1e-9, a relative 1.1e-5).
        np.testing.assert_allclose(top.column("score").to_numpy(), [e["score"] for e in expected], rtol=1e-5,
                                   atol=1e-7)
        for name in LABELS.values():
            want = [next(a["score"] for a in pipe(t, top_k=None) if a["label"] == name) for t in texts]
            np.testing.assert_allclose(every.column(f"score_{name}").to_numpy(), want, rtol=1e-5, atol=1e-7)
        labels |= set(top.column("label").to_pylist())
    assert len(labels) > 1  # the weights tell the texts apart: a test that could not fail would not


@pytest.mark.ray
def test_embeddings_are_the_mean_of_the_encoders_hidden_states(shardscore, models: dict, tmp_path: Path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    _run(shardscore, models, tmp_path / "out", f"path={models['encoder']}", "column=review",
         "task=feature-extraction", "batch_size=16")
    tokenizer, encoder = AutoTokenizer.from_pretrained(models["encoder"]), AutoModel.from_pretrained(models["encoder"])
    shard = sorted(models["input"].glob("*.parquet"))[1]
    got = pq.read_table(tmp_path / "out" / shard.name).column("embedding")
    assert got.type == pa.list_(pa.float32(), 16)
    with torch.inference_mode():  # one text at a time, unpadded: the mean over its own tokens
        want = [encoder(**tokenizer(t, return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
                for t in pq.read_table(shard).column("review").to_pylist()]
    np.testing.assert_allclose(np.stack(got.to_numpy(zero_copy_only=False)), np.stack(want), rtol=1e-4, atol=1e-5)


@pytest.mark.ray
def test_a_model_directory_on_s3_gives_the_same_answers(shardscore, s3, models: dict, tmp_path: Path):
    client, bucket = s3.client(), "models-hf"
    client.create_bucket(Bucket=bucket)
    for f in models["classifier"].iterdir():
        client.upload_file(str(f), bucket, f"sentiment/v1/{f.name}")
    env = {**s3.credentials, "AWS_ENDPOINT_URL": s3.endpoint}
    _run(shardscore, models, tmp_path / "s3", f"path=s3://{bucket}/sentiment/v1", "column=review", env=env)
    _run(shardscore, models, tmp_path / "local", f"path={models['classifier']}", "column=review")
    for name in ("part-0.parquet", "part-2.parquet"):
        assert pq.read_table(tmp_path / "s3" / name).equals(pq.read_table(tmp_path / "local" / name))


@pytest.mark.ray
def test_a_null_text_is_rejected_alone(shardscore, models: dict, tmp_path: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    texts: list[str | None] = _texts(40, 7)
    texts[13] = None
    pq.write_table(pa.table({"id": list(range(40)), "review": texts}), inp / "part-0.parquet")
    r = shardscore("run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model", SPEC, "--key-columns",
                   "id", "--model-arg", f"path={models['classifier']}", "--model-arg", "column=review",
                   "--max-bad-rows", "1", *ONE_WORKER)
    assert r.returncode == 0, r.stderr[-3000:]
    rejected = pq.read_table(tmp_path / "out" / "_rejected" / "part-0.pq")
    assert rejected.column("id").to_pylist() == [13]
    assert "review is None, not a text" in rejected.column("error").to_pylist()[0]
    assert pq.read_table(tmp_path / "out" / "part-0.parquet").num_rows == 39


def _refused(cli, models: dict, tmp_path: Path, *args: str, env: dict | None = None) -> str:
    r = cli("run", "--input", str(models["input"]), "--output", str(tmp_path / "out"), "--model", SPEC,
            *[a for arg in args for a in ("--model-arg", arg)], env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.parquet"))
    return r.stderr


def test_bad_model_directories_are_named_before_scoring(cli, models: dict, tmp_path: Path):
    err = _refused(cli, models, tmp_path, f"path={tmp_path / 'nowhere'}", "column=review")
    assert f"model directory {tmp_path / 'nowhere'} does not exist" in err, err
    weights_only = tmp_path / "weights"
    weights_only.mkdir()
    (weights_only / "model.safetensors").write_bytes((models["classifier"] / "model.safetensors").read_bytes())
    err = _refused(cli, models, tmp_path, f"path={weights_only}", "column=review")
    assert "is not a model saved by save_pretrained (no config.json" in err, err
    (weights_only / "config.json").write_bytes((models["classifier"] / "config.json").read_bytes())
    err = _refused(cli, models, tmp_path, f"path={weights_only}", "column=review")
    assert "has no tokenizer" in err and "tokenizer.save_pretrained" in err, err
    err = _refused(cli, models, tmp_path, f"path={models['encoder']}", "column=review")
    assert "holds BertModel architecture, not one for sequence classification" in err, err
    err = _refused(cli, models, tmp_path, f"path={models['classifier']}", "column=comment")
    assert "reads columns ['comment'] that the input does not have" in err, err


def test_without_transformers_the_extra_is_named(cli, models: dict, tmp_path: Path):
    blocker = tmp_path / "blocker"  # transformers as if not installed: a finder that says it is not there
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n\n\nclass Absent:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'transformers':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n\n\n"
        "sys.meta_path.insert(0, Absent())\n")
    err = _refused(cli, models, tmp_path, f"path={models['classifier']}", "column=review",
                   env={"PYTHONPATH": str(blocker)})
    assert "needs the transformers package" in err and "pip install 'shardscore[huggingface]'" in err, err
