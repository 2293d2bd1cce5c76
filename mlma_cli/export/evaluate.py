"""Check an export against its checkpoint on real test sets (``mlma export --check-data DATA --test-sets ...``).

Per test set (DATA/fbank/<corpus>/<lang>/<split>):
- PyTorch vs onnxruntime fp32 on the stored training features: max abs log-prob difference, % of utterances
  with identical greedy token ids; the same for the int8 model when there is one;
- greedy WER of PyTorch, ONNX fp32 and ONNX int8 on those features;
- sherpa-onnx (``OfflineRecognizer.from_zipformer_ctc``, its own kaldi-native-fbank features from the audio):
  WER, and % of utterances whose tokens equal onnxruntime's greedy ids on mlma's knf features (``compute_fbank``);
- ``mlma transcribe`` (PyTorch, lhotse features from the audio) WER;
- the feature gap: max abs difference between ``compute_fbank`` (knf) and lhotse's Fbank on the same audio.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mlma_cli.export.parity import compare
from mlma_cli.export.runtime import INT8_FILE, MODEL_FILE, SAMPLE_RATE, TOKENS_FILE, OnnxCtcModel, compute_fbank

_TAG = re.compile(r"<[^<>\s]+>")


@dataclass
class SetCheck:
    dataset: str
    utts: int
    max_abs_diff_fp32: float
    identical_fp32_pct: float
    max_abs_diff_int8: Optional[float]
    identical_int8_pct: Optional[float]
    wer_torch: float
    wer_fp32: float
    wer_int8: Optional[float]
    wer_sherpa: Optional[float]
    sherpa_equal_ids_pct: Optional[float]
    wer_transcribe: Optional[float]
    fbank_gap: float


def sherpa_recognizer(export_dir: Path, threads: int = 1, int8: bool = False):
    """sherpa-onnx's offline CTC recognizer on an export dir: the zipformer-CTC model class takes (x, x_lens)
    and returns (log_probs, log_probs_len) with subsampling 4, and reads V from the output shape."""
    import sherpa_onnx

    return sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        model=str(export_dir / (INT8_FILE if int8 else MODEL_FILE)), tokens=str(export_dir / TOKENS_FILE),
        num_threads=threads, sample_rate=SAMPLE_RATE, feature_dim=80, decoding_method="greedy_search")


def sherpa_decode(recognizer, audio: Sequence[np.ndarray], tokens: Sequence[str]):
    """Decode 16 kHz waveforms with sherpa-onnx -> (texts without <tags>, token ids)."""
    streams = []
    for a in audio:
        s = recognizer.create_stream()
        s.accept_waveform(SAMPLE_RATE, np.asarray(a, dtype=np.float32))
        streams.append(s)
    recognizer.decode_streams(streams)
    index = {p: i for i, p in enumerate(tokens)}
    texts, ids = [], []
    for s in streams:
        texts.append(" ".join(_TAG.sub(" ", s.result.text).split()))
        ids.append([index[t.replace(" ", "\u2581")] for t in s.result.tokens])  # sherpa shows '▁' as ' '
    return texts, ids


def _wer(refs: List[str], hyps: List[str]) -> float:
    from mlma_cli.score.wer import wer_details

    return round(wer_details(refs, hyps).total.rate, 2)


def check_dataset(inf, export_dir: Path, data_dir: Path, dataset: str, batch_size: int = 8, threads: int = 1,
                  max_utts: Optional[int] = None, sherpa: bool = True, transcribe: bool = True) -> SetCheck:
    """All comparisons of the module docstring on one test set."""
    from mlma_cli.data.audio import resample
    from mlma_cli.data.features import fbank_extractor
    from mlma_cli.decode.runner import cut_features, cuts_for
    from mlma_cli.text.normalize import normalize

    cuts = list(cuts_for(data_dir, dataset))[:max_utts]
    lang = dataset.split("/")[1]
    extractor = fbank_extractor()
    feats = [np.asarray(cut_features(c, extractor), dtype=np.float32) for c in cuts]
    refs = [normalize(" ".join(s.text or "" for s in c.supervisions), lang) for c in cuts]
    tok = inf.tokenizer
    hyp = lambda ids: normalize(tok.decode(ids), lang)  # noqa: E731

    fp32 = OnnxCtcModel(export_dir, threads=threads)
    rep = compare(inf.model, fp32, feats, batch_size)
    int8 = OnnxCtcModel(export_dir, threads=threads, int8=True) if (export_dir / INT8_FILE).is_file() else None
    rep8 = compare(inf.model, int8, feats, batch_size) if int8 else None

    audio = [resample(c.load_audio()[0].astype(np.float32), int(c.sampling_rate), SAMPLE_RATE) for c in cuts]
    gap = max(float(np.abs(compute_fbank(a) - extractor.extract(a, SAMPLE_RATE)).max()) for a in audio)
    wer_sherpa = equal = None
    if sherpa:
        texts, ids = sherpa_decode(sherpa_recognizer(export_dir, threads), audio, fp32.tokens)
        ort_ids = fp32.greedy([compute_fbank(a) for a in audio], batch_size)
        equal = round(100.0 * sum(a == b for a, b in zip(ids, ort_ids)) / max(len(cuts), 1), 2)
        wer_sherpa = _wer(refs, [normalize(t, lang) for t in texts])
    wer_tr = None
    if transcribe:
        wer_tr = _transcribe_wer(inf, cuts, refs, lang)
    return SetCheck(
        dataset, len(cuts), round(rep.max_abs_diff, 6), round(rep.identical_pct, 2),
        round(rep8.max_abs_diff, 4) if rep8 else None, round(rep8.identical_pct, 2) if rep8 else None,
        _wer(refs, [hyp(i) for i in rep.torch_ids]), _wer(refs, [hyp(i) for i in rep.onnx_ids]),
        _wer(refs, [hyp(i) for i in rep8.onnx_ids]) if rep8 else None, wer_sherpa, equal, wer_tr, round(gap, 6))


def _transcribe_wer(inf, cuts, refs: List[str], lang: str) -> Optional[float]:
    """WER of `mlma transcribe` on the cuts' audio files (None when a cut is only part of its recording)."""
    from mlma_cli.decode.runner import DecodeOptions
    from mlma_cli.decode.transcribe import transcribe_files
    from mlma_cli.text.normalize import normalize

    paths = []
    for c in cuts:
        src = c.recording.sources
        if len(src) != 1 or src[0].type != "file" or c.start != 0 or abs(c.duration - c.recording.duration) > 1e-3:
            return None
        paths.append(src[0].source)
    out, errors = transcribe_files(inf, paths, DecodeOptions())
    if errors:
        return None
    return _wer(refs, [normalize(t.text, lang) for t in out])


def check_export(checkpoints, export_dir, data_dir, test_sets: Sequence[str], use_averaged: bool = False,
                 **kw) -> List[SetCheck]:
    """check_dataset for every test set, with the model of ``checkpoints`` loaded once."""
    import torch

    from mlma_cli.checkpoint import load_for_inference

    torch.set_num_threads(kw.get("threads", 1))
    inf = load_for_inference(checkpoints, use_averaged=use_averaged)
    return [check_dataset(inf, Path(export_dir), Path(data_dir), ds, **kw) for ds in test_sets]


def format_checks(rows: Sequence[SetCheck]) -> str:
    """Markdown table of check_export's rows."""
    cols = list(asdict(rows[0]).keys()) if rows else []
    fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
    lines = ["|" + "|".join(cols) + "|", "|" + "---|" * len(cols)]
    lines += ["|" + "|".join(fmt(v) for v in asdict(r).values()) + "|" for r in rows]
    return "\n".join(lines)


def checks_to_dict(rows: Sequence[SetCheck]) -> List[Dict]:
    return [asdict(r) for r in rows]
