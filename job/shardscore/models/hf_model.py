"""A Hugging Face transformers model from a directory written by `save_pretrained` (model and tokenizer), local or on
an object store, never from the Hub at run time: `--model shardscore.models.hf_model:load_model
--model-arg path=s3://bucket/models/sentiment/ --model-arg column=review`.

- `task=text-classification` (default): the transformers pipeline on the text column, in batches; columns
  `label` and `score` (the top class), or one `score_<label>` per class with `all_scores=true`.
- `task=feature-extraction`: one embedding per text, the mean of the last hidden states over its tokens (padding
  masked out), as a fixed-size list column `embedding`.
A null text fails its batch, naming the row (with `--max-bad-rows`, only that row is rejected). The directory's
files are the model's fingerprint. The driver checks the directory (config, tokenizer, a head for the task) without
importing torch; each worker writes the files to a local temporary folder once and builds the model on its device.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .artifact import files_digest, installed, library, unpack

TASKS = ("text-classification", "feature-extraction")
# Everything is in the directory: never reach for the Hub. Set before transformers is imported (this module imports
# it only when the model is built), as huggingface_hub reads it once, at its import (huggingface_hub/constants.py).
os.environ["HF_HUB_OFFLINE"] = "1"
#: Files a tokenizer is saved as (one of them is enough): the fast tokenizer's, or a vocabulary.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def _read_directory(source: str) -> dict[str, bytes]:
    """Every file under `source`, by its path relative to it."""
    import pyarrow.fs as pafs

    from .. import storage

    loc = storage.resolve(source)
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
    except FileNotFoundError:
        raise FileNotFoundError(f"model directory {source} does not exist") from None
    except OSError as exc:
        raise OSError(f"model directory {source} cannot be read ({exc})") from None
    files = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with loc.fs.open_input_stream(info.path) as f:
                files[info.path[len(loc.path):].lstrip("/")] = f.read()
    if not files:
        raise FileNotFoundError(f"model directory {source} holds no files")
    return files


def _check(files: dict[str, bytes], task: str, source: str) -> dict[str, Any]:
    """The config, after checking that the directory is a transformers model with a tokenizer and a head for the
    task (what save_pretrained of a model and of its tokenizer write)."""
    if "config.json" not in files:
        raise ValueError(f"model directory {source} is not a model saved by save_pretrained (no config.json; it "
                         f"holds {', '.join(sorted(files)[:8])})")
    try:
        config = json.loads(files["config.json"])
    except ValueError as exc:
        raise ValueError(f"model directory {source}: config.json is not JSON ({exc})") from None
    if not any(name in files for name in TOKENIZER_FILES):
        raise ValueError(f"model directory {source} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save it "
                         "beside the model with tokenizer.save_pretrained(<directory>)")
    heads = [a for a in config.get("architectures", []) if a.endswith("ForSequenceClassification")]
    if task == "text-classification" and not heads:
        raise ValueError(f"model directory {source} holds {', '.join(config.get('architectures', ['no']))} "
                         "architecture, not one for sequence classification: use task=feature-extraction for "
                         "embeddings, or save a *ForSequenceClassification model")
    return config


class HFModel:
    """NumPy batches of one text column in, labels and scores or embeddings out. Pickles as the directory's
    files; the model is built on each worker, on its device."""

    batch_format = "numpy"

    def __init__(self, files: dict[str, bytes], task: str, column: str, all_scores: bool, batch_size: int,
                 max_length: int | None):
        self._files, self.task, self.column = files, task, column
        self.all_scores, self.batch_size, self.max_length = all_scores, batch_size, max_length
        self.columns = [column]
        self.fingerprint = files_digest(files)
        self._pipe: Any = None
        self._device = "cpu"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pipe": None}

    def prepare(self, device: str) -> None:
        transformers = library("transformers", "huggingface")
        folder = unpack(self._files, "shardscore-hf-")
        self._device = device
        self._pipe = transformers.pipeline(self.task, model=folder, tokenizer=folder, device=device)

    def _texts(self, batch: dict[str, np.ndarray]) -> list[str]:
        texts = batch[self.column].tolist()
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"row {i} of the batch: {self.column} is {text!r}, not a text")
        return texts

    def _classify(self, texts: list[str]) -> dict[str, np.ndarray]:
        answers = self._pipe(texts, batch_size=self.batch_size, truncation=True, max_length=self.max_length,
                             top_k=None if self.all_scores else 1)
        if not self.all_scores:
            top = [a[0] for a in answers]
            return {"label": np.array([a["label"] for a in top]), "score": np.array([a["score"] for a in top])}
        labels = sorted(a["label"] for a in answers[0]) if answers else []
        by_label = [{a["label"]: a["score"] for a in row} for row in answers]
        return {f"score_{label}": np.array([row[label] for row in by_label]) for label in labels}

    def _embed(self, texts: list[str]) -> dict[str, np.ndarray]:
        import torch

        tokenizer, model = self._pipe.tokenizer, self._pipe.model
        pooled = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                encoded = tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(model.device)
                hidden = model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
        width = model.config.hidden_size
        return {"embedding": np.concatenate(pooled) if pooled else np.zeros((0, width), np.float32)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._pipe is None:
            self.prepare(self._device)
        texts = self._texts(batch)
        return self._classify(texts) if self.task == "text-classification" else self._embed(texts)


def load_model(path: str | None = None, column: str = "text", task: str = "text-classification",
               all_scores: bool = False, batch_size: int = 32, max_length: int | None = None) -> HFModel:
    """path: the directory save_pretrained wrote (model and tokenizer); column: the text column; task:
    text-classification or feature-extraction; all_scores: every class's score; batch_size: texts per forward pass;
    max_length: tokens kept per text (default: the model's)."""
    installed("transformers", "huggingface")
    installed("torch", "huggingface")
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")
    if not path:
        raise ValueError("give the model directory: --model-arg path=<directory>")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    files = _read_directory(path)
    _check(files, task, path)
    return HFModel(files, task, column, bool(all_scores), int(batch_size), max_length)
