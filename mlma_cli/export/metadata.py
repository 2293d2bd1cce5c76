"""ONNX ``metadata_props`` of an mlma export: what a runtime needs to use the file without the checkpoint.

Keys (all values are strings, as ONNX requires):
    mlma_format        "mlma-ctc-onnx" (marks the file as ours; the runtime refuses files without it)
    mlma_version       mlma's version at export time
    model_type         "conmamba" | "conformer" (mixer in ``mixer``: "mamba1" | "mamba2" | "")
    languages          comma-separated ISO codes the model was trained on
    vocab_size         V
    blank_id           0
    subsampling_factor 4 (or 2: the model config's front end)
    feature_dim        80
    sample_rate        16000
    lang_tags          "1" when the tokenizer has <lang> tags
    is_int8            "1" for the quantized copy
Also comment / url fields, like icefall's exports, which sherpa-onnx prints in debug mode.
"""
from __future__ import annotations

from typing import Dict, Mapping

FORMAT = "mlma-ctc-onnx"
FEATURE_DIM = 80
SAMPLE_RATE = 16000
INT_KEYS = ("vocab_size", "blank_id", "subsampling_factor", "feature_dim", "sample_rate")


def build_metadata(*, model_type: str, mixer: str, languages, vocab_size: int, lang_tags: bool, version: str,
                   num_features: int = FEATURE_DIM, subsampling_factor: int = 4, is_int8: bool = False) -> Dict[str, str]:
    """The metadata_props dict of an export (see the module docstring)."""
    return {
        "mlma_format": FORMAT,
        "mlma_version": version,
        "model_type": model_type,
        "mixer": mixer,
        "languages": ",".join(languages),
        "vocab_size": str(int(vocab_size)),
        "blank_id": "0",
        "subsampling_factor": str(int(subsampling_factor)),
        "feature_dim": str(int(num_features)),
        "sample_rate": str(SAMPLE_RATE),
        "lang_tags": "1" if lang_tags else "0",
        "is_int8": "1" if is_int8 else "0",
        "comment": "mlma CTC model: x (N,T,80) raw fbank + x_lens (N,) -> log_probs (N,T',V) + log_probs_len (N,)",
        "url": "https://arxiv.org/abs/2510.18684",
    }


def parse_metadata(props: Mapping[str, str]) -> Dict[str, object]:
    """Typed view of metadata_props: ints for INT_KEYS, a list for languages, bools for the flags."""
    out: Dict[str, object] = dict(props)
    for key in INT_KEYS:
        if key in out:
            out[key] = int(out[key])
    out["languages"] = [x for x in str(props.get("languages", "")).split(",") if x]
    out["lang_tags"] = props.get("lang_tags") == "1"
    out["is_int8"] = props.get("is_int8") == "1"
    return out


def is_mlma(props: Mapping[str, str]) -> bool:
    return props.get("mlma_format") == FORMAT
