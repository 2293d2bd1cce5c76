"""Shared fixtures.

``tiny_data_dir`` (session-scoped): a real miniature DATA directory built with mlma's own data functions:
the espeak-ng synthetic corpus for en and de (12 train / 4 dev utterances each), 80-bin fbank features in lilcom
storage + cmvn.json (``mlma features``), and a character SentencePiece tokenizer at ``DATA/lang/tokenizer.model``.
Skipped when espeak-ng is not installed.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest
import torch

TINY_LANGS = ("en", "de")
TINY_UTTS = {"train": 12, "dev": 4}


@dataclass
class TinyData:
    data_dir: Path
    tokenizer: Path
    cmvn: Path
    langs: List[str]
    train: List[str]   # dataset names, e.g. "synthetic/en/train"
    dev: List[str]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> TinyData:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    from mlma_cli.data.features import compute_features
    from mlma_cli.data.layout import fbank_dir
    from mlma_cli.data.synthetic import prepare_synthetic
    from mlma_cli.data.tokenizer import train_tokenizer

    data = tmp_path_factory.mktemp("tiny_data")
    # the closed grammar without augmentation: the overfit, resume and export tests are tuned on its short clean
    # utterances (the open-vocabulary default has its own tests in test_synthetic.py and the mini recipe)
    prepare_synthetic(data, languages=TINY_LANGS, utts_per_split=dict(TINY_UTTS), seed=0, num_jobs=2,
                      text="grammar", augment_audio=False)
    train = [f"synthetic/{lang}/train" for lang in TINY_LANGS]
    dev = [f"synthetic/{lang}/dev" for lang in TINY_LANGS]
    compute_features(data, datasets=train + dev, num_jobs=1)
    train_tokenizer([fbank_dir(data, "synthetic", lang, "train") / "cuts.jsonl.gz" for lang in TINY_LANGS],
                    data / "lang", vocab_size=100, model_type="char")
    return TinyData(data_dir=data, tokenizer=data / "lang" / "tokenizer.model", cmvn=data / "fbank" / "cmvn.json",
                    langs=list(TINY_LANGS), train=train, dev=dev)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small ops on a shared 2-core machine: one thread avoids OpenMP oversubscription stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
