"""`mlma bench transcribe`: long-audio transcription against per-utterance decoding, on real test utterances.

Builds one long 16 kHz wav from the test sets' utterances (shuffled, `pause` seconds of silence between them,
until `minutes`), then transcribes it

* `utterances`: each utterance on its own (`transcribe_arrays`, the reference point: no segmentation error),
* `silero` (`silero:PAD`: with `vad_pad=PAD`): the long file, silero-vad segments (`transcribe_files`, streamed),
* `windows`: the long file, fixed 30 s windows + 2 s context (`--vad none`),
* `whole`: the long file through the encoder in one piece (no segmentation; linear-time encoders only),

and reports for each: WER over the whole word sequence (references normalized per language, hypotheses with
the generic normalizer, the same for every row), RTF (wall time / audio time, VAD included), the number of
segments, and, from the word times, how far each utterance's first word start / last word end lies from the
true speech start / end (hypothesis words assigned to the utterance whose pause-to-pause span holds their
midpoint; median and 90th percentile in seconds). With a language-tagged tokenizer: language-ID accuracy per
utterance (`utterances`) and per segment (majority true language of the segment's time).
"""
from __future__ import annotations

import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from lhotse import CutSet

from mlma_cli.checkpoint import load_for_inference
from mlma_cli.data.layout import find_datasets, manifest_dir, parse_dataset
from mlma_cli.decode.runner import DecodeOptions
from mlma_cli.decode.segment import load_silero
from mlma_cli.decode.transcribe import transcribe_arrays, transcribe_files
from mlma_cli.errors import MlmaError
from mlma_cli.score.wer import wer_details
from mlma_cli.text.normalize import normalize, normalize_generic
from mlma_cli.utils.device import pick_device
from mlma_cli.utils.io import write_json_atomic

log = logging.getLogger(__name__)
SR = 16000
CONFIGS = ("utterances", "silero", "windows", "whole")


def _speech_bounds(x: np.ndarray) -> Tuple[int, int]:
    idx = np.flatnonzero(np.abs(x) > 0.02 * max(float(np.abs(x).max()), 1e-9))
    return (int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, len(x))


def build_long_audio(cuts, minutes: float, pause: Tuple[float, float], seed: int = 0):
    """Concatenate shuffled cuts with random pauses. -> (samples, [dict(id, lang, text, start, end, speech)])

    `start`/`end` bound the utterance's audio in the file, `speech` its non-silent part (seconds)."""
    rng = random.Random(seed)
    cuts = list(cuts)
    rng.shuffle(cuts)
    parts, truth, t = [], [], 0
    for c in cuts:
        if t >= minutes * 60 * SR:
            break
        gap = np.zeros(int(rng.uniform(*pause) * SR), dtype=np.float32)
        x = np.asarray(c.resample(SR).load_audio(), dtype=np.float32).mean(axis=0)
        a, b = _speech_bounds(x)
        parts += [gap, x]
        t += len(gap)
        sup = c.supervisions[0]
        truth.append({"id": c.id, "lang": sup.language, "text": sup.text, "audio": x,
                      "start": t / SR, "end": (t + len(x)) / SR, "speech": ((t + a) / SR, (t + b) / SR)})
        t += len(x)
    parts.append(np.zeros(int(pause[1] * SR), dtype=np.float32))
    return np.concatenate(parts), truth


def _assign_words(words, truth) -> List[List]:
    """Hypothesis words -> the utterance whose span (extended to the middle of the pauses) holds their midpoint."""
    edges = [(truth[k]["end"] + truth[k + 1]["start"]) / 2 for k in range(len(truth) - 1)]
    out: List[List] = [[] for _ in truth]
    for w in words:
        out[int(np.searchsorted(edges, (w.start + w.end) / 2))].append(w)
    return out


def _pct(xs: Sequence[float], q: float) -> Optional[float]:
    return round(float(np.percentile(xs, q)), 3) if len(xs) else None


def _lid_segments(segments, truth) -> Optional[float]:
    hits = []
    for s in segments:
        if s.language is None:
            continue
        overlap: Dict[str, float] = {}
        for u in truth:
            o = min(s.end, u["end"]) - max(s.start, u["start"])
            if o > 0:
                overlap[u["lang"]] = overlap.get(u["lang"], 0) + o
        if overlap:
            hits.append(s.language == max(overlap, key=overlap.get))
    return round(100 * sum(hits) / len(hits), 2) if hits else None


def run_bench_transcribe(checkpoints: Sequence[str], data_dir: Path, test_sets: str = "synthetic/*/test",
                         minutes: float = 10.0, pause: Tuple[float, float] = (0.4, 1.5), seed: int = 0,
                         method: str = "ctc-greedy-search", device: str = "auto",
                         configs: Sequence[str] = CONFIGS, out: Optional[Path] = None) -> dict:
    names = find_datasets(data_dir, test_sets, kind="manifests") if "*" in test_sets else test_sets.split(",")
    if not names:
        raise MlmaError(f"--test-sets {test_sets!r} matches nothing under {data_dir}/manifests")
    cuts = []
    for n in names:
        cuts += list(CutSet.from_file(manifest_dir(data_dir, *parse_dataset(n)) / "cuts.jsonl.gz"))
    audio, truth = build_long_audio(cuts, minutes, pause, seed)
    duration = len(audio) / SR
    dev = pick_device(device)
    inf = load_for_inference(list(checkpoints), device=dev)
    tagged = inf.tokenizer.lang_tags
    ref = " ".join(normalize(u["text"], u["lang"]) for u in truth)
    decode = DecodeOptions(method=method, device=dev)
    transcribe_arrays(inf, [truth[0]["audio"]], decode)  # warm-up (threads, kernels) outside the timings
    load_silero()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "long.wav"
        sf.write(str(wav), audio, SR, subtype="PCM_16")
        for cfg in configs:
            t0 = time.perf_counter()
            if cfg == "utterances":
                res = transcribe_arrays(inf, [u["audio"] for u in truth], decode, names=[u["id"] for u in truth])
                segments = [s for r in res for s in r.segments]
                offsets = [u["start"] for u in truth]  # utterance-relative times -> file times
                words = [w for r, o in zip(res, offsets) for w in _shift_words(r.words, o)]
                hyp_text = " ".join(r.text for r in res)
                lid = (round(100 * float(np.mean([r.language == u["lang"] for r, u in zip(res, truth)])), 2)
                       if tagged else None)
            else:
                name, _, pad = cfg.partition(":")
                kw = {"silero": {"vad": "silero", "vad_pad": float(pad) if pad else 0.03}, "windows": {"vad": "none"},
                      "whole": {"max_segment_seconds": duration + 1}}[name]
                (r,), errors = transcribe_files(inf, [str(wav)], decode, **kw)
                segments, words, hyp_text = r.segments, r.words, r.text
                lid = _lid_segments(segments, truth) if tagged else None
            wall = time.perf_counter() - t0
            det = wer_details([ref], [normalize_generic(hyp_text)])
            start_err, end_err = [], []
            for u, ws in zip(truth, _assign_words(words, truth)):
                if ws:
                    start_err.append(abs(ws[0].start - u["speech"][0]))
                    end_err.append(abs(ws[-1].end - u["speech"][1]))
            rows.append({"config": cfg, "wer": round(det.total.rate, 2), "errors": det.total.errors,
                         "ref_words": det.total.ref_len, "rtf": round(wall / duration, 4), "segments": len(segments),
                         "start_err_median": _pct(start_err, 50), "start_err_p90": _pct(start_err, 90),
                         "end_err_median": _pct(end_err, 50), "end_err_p90": _pct(end_err, 90), "lid_accuracy": lid})
            log.info("%s", rows[-1])
    table = _table(rows, duration, len(truth), tagged)
    rep = {"checkpoints": list(checkpoints), "test_sets": names, "minutes": round(duration / 60, 2),
           "utterances": len(truth), "pause": list(pause), "seed": seed, "method": method, "device": dev,
           "rows": rows, "table": table}
    if out:
        write_json_atomic(out, rep)
    return rep


def _shift_words(words, offset: float):
    from dataclasses import replace

    return [replace(w, start=w.start + offset, end=w.end + offset) for w in words]


def _table(rows, duration: float, n_utts: int, tagged: bool) -> str:
    head = (f"{duration / 60:.1f} min, {n_utts} utterances\n"
            "| decoding | WER % | errors / words | RTF | segments | start err median / p90 (s) | "
            "end err median / p90 (s) |" + (" LID % |" if tagged else "") + "\n"
            "|---|---|---|---|---|---|---|" + ("---|" if tagged else "") + "\n")
    return head + "\n".join(
        f"| {r['config']} | {r['wer']:.2f} | {r['errors']} / {r['ref_words']} | {r['rtf']:.4f} | {r['segments']} | "
        f"{r['start_err_median']} / {r['start_err_p90']} | {r['end_err_median']} / {r['end_err_p90']} |"
        + (f" {r['lid_accuracy']} |" if tagged else "") for r in rows)


def run_bench_lid(checkpoints: Sequence[str], data_dir: Path, test_sets: str = "synthetic/*/test",
                  method: str = "ctc-greedy-search", device: str = "auto", batch_size: int = 16,
                  out: Optional[Path] = None) -> dict:
    """Language-ID accuracy of `transcribe_files` on test sets' cuts manifests (tagged tokenizers only).

    Per test set: accuracy over all utterances (no tag emitted counts as wrong), utterances without a tag, and
    the confusion counts {true: {detected: n}}. The language is the tag the model emits (`Transcript.language`).
    """
    names = find_datasets(data_dir, test_sets, kind="manifests") if "*" in test_sets else test_sets.split(",")
    dev = pick_device(device)
    inf = load_for_inference(list(checkpoints), device=dev)
    if not inf.tokenizer.lang_tags:
        raise MlmaError(f"{checkpoints[0]}: its tokenizer has no language tags (train one with `mlma tokenizer "
                        "--lang-tags`), so the model reports no language")
    rows, lines = [], ["| test set | utts | LID accuracy % | no tag | confusions |", "|---|---|---|---|---|"]
    for name in names:
        path = manifest_dir(data_dir, *parse_dataset(name)) / "cuts.jsonl.gz"
        truth = {c.id: c.supervisions[0].language for c in CutSet.from_file(path)}
        res, errors = transcribe_files(inf, [str(path)], DecodeOptions(method=method, device=dev), batch_size=batch_size)
        conf: Dict[str, Dict[str, int]] = {}
        for r in res:
            row = conf.setdefault(truth[r.file], {})
            row[str(r.language)] = row.get(str(r.language), 0) + 1
        hits = sum(r.language == truth[r.file] for r in res)
        no_tag = sum(r.language is None for r in res)
        acc = 100 * hits / max(len(res) + len(errors), 1)
        rows.append({"dataset": name, "utts": len(res), "errors": len(errors), "lid_accuracy": round(acc, 2),
                     "no_tag": no_tag, "confusion": conf})
        wrong = {f"{t}->{d}": n for t, ds in conf.items() for d, n in ds.items() if d != t}
        lines.append(f"| {name} | {len(res)} | {acc:.1f} | {no_tag} | {wrong or '-'} |")
    rep = {"checkpoints": list(checkpoints), "method": method, "rows": rows, "table": "\n".join(lines)}
    if out:
        write_json_atomic(out, rep)
    return rep
