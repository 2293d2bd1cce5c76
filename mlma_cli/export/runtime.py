"""Torch-free inference of an ``mlma export`` directory with onnxruntime (numpy, kaldi-native-fbank, sentencepiece).

    from mlma_cli.export.runtime import OnnxCtcModel, compute_fbank
    m = OnnxCtcModel("exp/onnx", threads=2)            # a directory from `mlma export`, or a model.onnx file
    feats = compute_fbank(samples_16k)                   # (T, 80) float32, as mlma's training features
    lps = m.log_probs([feats, ...])                      # list of (T', V) float32 CTC log-probabilities
    ids = m.greedy([feats, ...])                         # list of token-id lists (blanks and repeats removed)
    texts = m.transcribe([samples_16k, ...])             # fbank -> model -> greedy -> text
    m.metadata                                           # parsed metadata_props (see export/metadata.py)

Nothing here imports torch (tested), so a deployment needs only onnxruntime, numpy, kaldi-native-fbank and,
for text output, sentencepiece.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from mlma_cli.errors import MissingDependencyError, MlmaError
from mlma_cli.export.metadata import FEATURE_DIM, SAMPLE_RATE, is_mlma, parse_metadata
from mlma_cli.export.tokens import read_tokens

PathLike = Union[str, os.PathLike]
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENS_FILE = "tokens.txt"
TOKENIZER_FILE = "tokenizer.model"
CONFIG_FILE = "config.json"


def fbank_options():
    """kaldi-native-fbank options equal to lhotse's Fbank that mlma trains on (data/features.py: fbank_extractor).

    Samples are floats in [-1, 1] (lhotse does not scale by 32768); dither 0, no snip_edges, povey window,
    mel bins 20 Hz .. Nyquist - 400 Hz. Measured gap to lhotse: max abs 3e-4 on espeak-ng speech.
    These are also sherpa-onnx's defaults for its offline recognizers (with normalize_samples=True).
    """
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = False
    opts.frame_opts.window_type = "povey"
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.mel_opts.num_bins = FEATURE_DIM
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = -400.0
    opts.energy_floor = 1e-10
    return opts


def compute_fbank(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """80-bin log-mel fbank of mono audio: samples (S,) float in [-1, 1] -> (T, 80) float32, T = ceil(S / 160).

    Audio at another rate is resampled to 16 kHz first.
    """
    try:
        import kaldi_native_fbank as knf
    except ImportError as err:
        raise MissingDependencyError("kaldi-native-fbank is needed for features: pip install kaldi-native-fbank") from err
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"compute_fbank expects mono samples (S,), got shape {samples.shape}")
    if sample_rate != SAMPLE_RATE:
        from mlma_cli.data.audio import resample

        samples = resample(samples, sample_rate, SAMPLE_RATE)
    fb = knf.OnlineFbank(fbank_options())
    fb.accept_waveform(SAMPLE_RATE, samples)
    fb.input_finished()
    n = fb.num_frames_ready
    if n == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    return np.stack([fb.get_frame(i) for i in range(n)]).astype(np.float32, copy=False)


def ctc_greedy_ids(log_probs: np.ndarray, blank: int = 0) -> List[int]:
    """Best path of one utterance: (T', V) scores -> token ids, repeats collapsed, blanks removed."""
    if log_probs.ndim != 2:
        raise ValueError(f"expected (T', V) log-probs, got shape {log_probs.shape}")
    best = log_probs.argmax(axis=-1)
    if best.size == 0:
        return []
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(t) for t in best[keep] if t != blank]


def pad_batch(feats: Sequence[np.ndarray]):
    """List of (T_i, F) -> x (N, max T, F) float32 zero-padded, x_lens (N,) int64."""
    lens = np.array([f.shape[0] for f in feats], dtype=np.int64)
    x = np.zeros((len(feats), int(lens.max()), feats[0].shape[1]), dtype=np.float32)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
    return x, lens


class OnnxCtcModel:
    """An exported mlma CTC model in onnxruntime.

    Args:
        path: an ``mlma export`` directory (model.onnx, tokens.txt, tokenizer.model) or a model .onnx file (its
            directory is searched for tokens.txt / tokenizer.model).
        threads: onnxruntime intra-op threads.
        int8: in a directory, load model.int8.onnx instead of model.onnx.
        providers: onnxruntime execution providers (default CPU).

    Attributes:
        metadata: parsed metadata_props (model_type, languages, vocab_size, subsampling_factor, ...).
        vocab_size, languages, blank_id, tokens (pieces by id), tokenizer (mlma Tokenizer or None).

    Raises MlmaError for a file that is not an mlma export, or tokens / tokenizer that do not match it.
    """

    def __init__(self, path: PathLike, threads: int = 1, int8: bool = False,
                 providers: Optional[Sequence[str]] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise MissingDependencyError("onnxruntime is needed: pip install 'mlma[onnx]'") from err
        path = Path(path)
        self.model_path = path / (INT8_FILE if int8 else MODEL_FILE) if path.is_dir() else path
        if not self.model_path.is_file():
            raise MlmaError(f"{self.model_path}: ONNX model not found; create it with `mlma export`"
                            + (" --int8" if int8 else ""))
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.model_path), so,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise MlmaError(f"{self.model_path}: onnxruntime cannot load it ({str(err).splitlines()[0]})") from err
        props = self.session.get_modelmeta().custom_metadata_map
        if not is_mlma(props):
            raise MlmaError(f"{self.model_path} is not an mlma export (no mlma metadata); "
                            "export a checkpoint with `mlma export`")
        self.metadata = parse_metadata(props)
        self.vocab_size = int(self.metadata["vocab_size"])
        self.blank_id = int(self.metadata["blank_id"])
        self.languages = list(self.metadata["languages"])
        self.num_features = int(self.metadata["feature_dim"])
        folder = self.model_path.parent
        self.tokens = read_tokens(folder / TOKENS_FILE) if (folder / TOKENS_FILE).is_file() else None
        if self.tokens is not None and len(self.tokens) != self.vocab_size:
            raise MlmaError(f"{folder / TOKENS_FILE} has {len(self.tokens)} tokens but {self.model_path.name} "
                            f"has a vocabulary of {self.vocab_size}; they come from different exports")
        self.tokenizer = None
        if (folder / TOKENIZER_FILE).is_file():
            from mlma_cli.data.tokenizer import Tokenizer  # sentencepiece; no torch

            self.tokenizer = Tokenizer.load(folder / TOKENIZER_FILE)
            if self.tokenizer.vocab_size != self.vocab_size:
                raise MlmaError(f"{folder / TOKENIZER_FILE} has {self.tokenizer.vocab_size} pieces but "
                                f"{self.model_path.name} has a vocabulary of {self.vocab_size}; use the tokenizer "
                                "the model was trained with")

    def run(self, x: np.ndarray, x_lens: np.ndarray):
        """One batch: x (N, T, F) float32 raw fbank, x_lens (N,) int64 -> (log_probs (N, T', V), lens (N,))."""
        if x.ndim != 3 or x.shape[-1] != self.num_features:
            raise ValueError(f"x must be (N, T, {self.num_features}), got {x.shape}")
        lp, lens = self.session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32),
                                           "x_lens": np.asarray(x_lens, dtype=np.int64)})
        return lp, lens

    def log_probs(self, feats: Sequence[np.ndarray], batch_size: int = 8) -> List[np.ndarray]:
        """CTC log-probabilities of each utterance: list of (T_i, F) -> list of (T'_i, V), in input order.

        Utterances are batched by length (zero padding; the model masks it) ``batch_size`` at a time.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for i, f in enumerate(feats):
            if f.ndim != 2 or f.shape[1] != self.num_features or f.shape[0] < 1:
                raise ValueError(f"feats[{i}] must be (T >= 1, {self.num_features}), got {f.shape}")
        order = sorted(range(len(feats)), key=lambda i: -feats[i].shape[0])
        out: List[Optional[np.ndarray]] = [None] * len(feats)
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            lp, lens = self.run(*pad_batch([feats[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = lp[j, : int(lens[j])]
        return out  # type: ignore[return-value]

    def greedy(self, feats: Sequence[np.ndarray], batch_size: int = 8) -> List[List[int]]:
        """Greedy CTC token ids of each utterance (list of (T_i, F) features)."""
        return [ctc_greedy_ids(lp, self.blank_id) for lp in self.log_probs(feats, batch_size)]

    def text(self, ids: Sequence[int]) -> str:
        """Text of token ids: the tokenizer's decoding, else the tokens.txt pieces joined (SentencePiece's '▁' = space)."""
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids)
        if self.tokens is None:
            raise MlmaError(f"{self.model_path.parent} has neither {TOKENIZER_FILE} nor {TOKENS_FILE}")
        pieces = [self.tokens[i] for i in ids if i != self.blank_id and not self.tokens[i].startswith("<")]
        return "".join(pieces).replace("\u2581", " ").strip()

    def transcribe(self, audio: Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE, batch_size: int = 8) -> List[str]:
        """Texts of mono waveforms (each (S,) float in [-1, 1] at ``sample_rate``)."""
        feats = [compute_fbank(a, sample_rate) for a in audio]
        return [self.text(ids) for ids in self.greedy(feats, batch_size)]
