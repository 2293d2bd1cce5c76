"""Helpers shared by the training tests: configs for the tiny data of conftest.tiny_data_dir."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from lhotse import CutSet

# A very small ConMamba given as explicit ModelConfig fields (the "no name" form of the model section).
MICRO_MODEL: Dict[str, Any] = {"encoder": "conmamba", "d_model": 32, "num_layers": 1, "ffn_dim": 64,
                               "subsampling_channels": [8, 8], "dropout": 0.1, "conv_kernel": 7}


def config_dict(tiny, exp_dir: Path, model: Optional[Dict[str, Any]] = None, data: Optional[Dict[str, Any]] = None,
                train: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    d = {
        "model": dict(model or MICRO_MODEL),
        "data": {"data_dir": str(tiny.data_dir), "tokenizer": str(tiny.tokenizer), "cmvn": str(tiny.cmvn),
                 "train": ["synthetic/*/train"], "dev": [], "max_duration": 8.0, "max_cut_duration": 8.0,
                 "num_buckets": 2, "shuffle_buffer": 100, **(data or {})},
        "train": {"exp_dir": str(exp_dir), "lr": 2e-3, "warmup_steps": 5, "log_every": 2, "valid_every": 0,
                  "checkpoint_every": 0, "progress": False, "seed": 3,
                  "threads": 1,  # the test machine's 2 cores are shared: more threads thrash
                  **(train or {})},
    }
    return d


def make_config(tiny, exp_dir: Path, **kw):
    from mlma_cli.train.config import Config

    return Config.from_dict(config_dict(tiny, exp_dir, **kw))


def write_subset(cuts: Iterable, data_dir: Path, dataset: str, repeat: int = 1) -> Path:
    """Write ``cuts`` (features already stored elsewhere, absolute paths) as DATA/fbank/<dataset>/cuts.jsonl.gz."""
    out = Path(data_dir) / "fbank" / dataset / "cuts.jsonl.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    cuts = list(cuts)
    items = [c if repeat == 1 else c.with_id(f"{c.id}-r{r}") for r in range(repeat) for c in cuts]
    CutSet.from_cuts(items).to_file(out)
    return out
