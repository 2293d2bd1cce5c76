"""Transcription of audio files and arrays with a trained checkpoint: text, segments, words, tokens, times.

    inf = load_for_inference(["exp/averaged.pt"])
    results, errors = transcribe_files(inf, ["a.wav", "talk.flac"], batch_size=8, language="de")
    results = transcribe_arrays(inf, [samples_16k, ...], names=["x", ...])
    results[0].text, .language, .segments[0].words[0].start, .to_dict()      # decode.results.Transcript

Pipeline: every input is opened (`audio_inputs`), planned into segments (`segment`: whole when up to
`max_segment_seconds`, else silero-vad pauses or fixed windows), then all segments of all inputs are decoded in
batches sorted by length (at most `batch_size` segments and `decode.max_duration` seconds of padded audio per
batch; a length-aware model gives the same log-probs in any batch), searched with `decode.method`, aligned
(`timestamps`) and put back together per input, in input order. Audio is read per batch, so memory holds a
batch of segments, never a whole long file, and the encoder never sees more than a segment plus context.

Language: with a tagged tokenizer the language tag the model emits is reported per segment, and per input as
the language of most of its segment time. `language=L` picks the per-language WFST graph (DIR/<L>/), reports L,
and with a tagged tokenizer removes the other languages' tags from the posteriors, forcing the model's choice.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from mlma_cli.decode.audio_inputs import SAMPLING_RATE, ArraySource, AudioSource, collect_inputs, open_source
from mlma_cli.decode.results import Segment, Transcript, majority_language
from mlma_cli.decode.runner import DecodeOptions, Searcher, batches
from mlma_cli.decode.segment import VADS, VadConfig, fbank_frames, kept_frames, plan_segments
from mlma_cli.decode.timestamps import frame_seconds, group_words, make_tokens
from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)
MIN_SECONDS = 0.05  # shorter audio cannot fill one encoder frame

Progress = Callable[[float, float], None]  # (audio seconds done, audio seconds in total)


@dataclass
class TranscribeOptions:
    """How to transcribe. `decode` holds the search (method, beam, graph, device, max_duration = padded seconds
    per batch); the rest is segmentation, batching and language."""

    decode: DecodeOptions = field(default_factory=DecodeOptions)
    language: Optional[str] = None
    vad: str = "silero"                # silero | none (fixed windows); silero falls back to windows, logged
    batch_size: int = 8                # segments per batch
    max_segment_seconds: float = 30.0  # longer audio is segmented
    context_seconds: float = 2.0       # audio on each side of a cut inside speech
    vad_pad: float = 0.03              # seconds kept before / after each VAD region (silero's default 30 ms)

    def validate(self) -> None:
        self.decode.validate()
        if self.vad not in VADS:
            raise MlmaError(f"--vad {self.vad!r}: choose {' or '.join(VADS)}")
        if self.batch_size < 1:
            raise MlmaError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.vad_pad < 0:
            raise MlmaError(f"--vad-pad must be >= 0, got {self.vad_pad}")
        if self.max_segment_seconds <= 0 or self.context_seconds < 0:
            raise MlmaError(f"--max-segment-seconds must be > 0 and --context-seconds >= 0 (got "
                            f"{self.max_segment_seconds}, {self.context_seconds})")
        from mlma_cli.text.normalize import LANGUAGES

        if self.language is not None and self.language not in LANGUAGES:
            raise MlmaError(f"--language {self.language!r} is not one of {', '.join(LANGUAGES)}")

    @classmethod
    def make(cls, opts: Union["TranscribeOptions", DecodeOptions, None] = None, **overrides) -> "TranscribeOptions":
        """Options from TranscribeOptions, a DecodeOptions (search only) or None, with keyword overrides: any
        TranscribeOptions field, or any DecodeOptions field (method, beam, graph, device, max_duration, ...) for
        the search; `lang` and `chunk_seconds` are the old names of `language` and `max_segment_seconds`."""
        if isinstance(opts, DecodeOptions):
            opts = cls(decode=opts)
        opts = opts or cls()
        renames = {"lang": "language", "chunk_seconds": "max_segment_seconds"}
        kw = {renames.get(k, k): v for k, v in overrides.items()}
        search = {k: kw.pop(k) for k in [k for k in kw if k in {f.name for f in fields(DecodeOptions)}]}
        unknown = sorted(set(kw) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown transcribe option(s): {', '.join(unknown)}")
        if search:
            kw["decode"] = replace(opts.decode, **search)
        return replace(opts, **kw) if kw else opts


@dataclass
class _Job:
    src: int
    seg: int
    start: int
    end: int
    left: int
    right: int
    whole: bool


class _Decoder:
    """Model + search for batches of segments: audio -> fbank -> (B, T', V) log-probs -> Segment results."""

    def __init__(self, inference, opts: TranscribeOptions):
        from mlma_cli.data.features import fbank_extractor

        self.opts = opts
        self.device = torch.device(opts.decode.device)
        self.model = inference.model.to(self.device).eval()
        self.tok = inference.tokenizer
        self.searcher = Searcher(opts.decode, self.tok)
        self.extractor = fbank_extractor()
        self.frame_s = frame_seconds(self.model)
        self.mask = None  # ids of the language tags `language` rules out
        if opts.language and self.tok.lang_tags:
            from mlma_cli.text.normalize import LANGUAGES

            self.mask = [self.tok.tag_id(l) for l in LANGUAGES if l != opts.language]

    def _out_frames(self, n_samples: int) -> int:
        feats = fbank_frames(n_samples)
        return int(self.model.output_lengths(torch.tensor([feats]))[0]) if feats > 0 else 0

    def __call__(self, audios: Sequence[np.ndarray], jobs: Sequence[_Job]) -> List[Segment]:
        from mlma_cli.decode.runner import pad_feats

        feats = [np.asarray(self.extractor.extract(a, SAMPLING_RATE), dtype=np.float32) for a in audios]
        x, x_lens = pad_feats(feats)
        with torch.inference_mode():  # masking stays inside: inference tensors cannot be edited outside it
            lp, out_lens = self.model(x.to(self.device), x_lens.to(self.device))
            lp, out_lens = lp.float().cpu(), out_lens.cpu()
            if self.mask:
                lp[..., self.mask] = -float("inf")
        out = []
        for j, job in enumerate(jobs):
            lo, hi = kept_frames(job, int(out_lens[j]), self._out_frames)
            offset = job.left / SAMPLING_RATE + lo * self.frame_s
            out.append(self._segment(lp[j, lo:hi], job, offset))
        return out

    def _search(self, lp: torch.Tensor) -> Tuple[List[int], List[Tuple[int, int]], Optional[str]]:
        """(T, V) -> token ids, their frame spans, and the WFST's word string (None for the CTC searches)."""
        from mlma_cli.decode.greedy import ctc_greedy_aligned
        from mlma_cli.decode.prefix_beam import ctc_prefix_beam_aligned
        from mlma_cli.decode.timestamps import ctc_forced_align

        m = self.opts.decode.method
        if lp.shape[0] == 0:
            return [], [], None
        if m == "ctc-greedy-search":
            ids, spans = ctc_greedy_aligned(lp.unsqueeze(0), torch.tensor([lp.shape[0]]))[0]
            return ids, spans, None
        if m == "ctc-prefix-beam-search":
            ids, spans = ctc_prefix_beam_aligned(lp, beam=self.opts.decode.beam)
            return ids, spans, None
        # WFST: kaldi-decoder / k2 return the token sequence; with the standard topology the graph's weights do
        # not depend on frame timing, so the acoustic Viterbi alignment of that sequence is the decoder's own.
        dec = self.searcher._wfst(self.opts.language or "")
        if self.opts.decode.backend == "k2":
            r = dec.decode(lp.unsqueeze(0), [lp.shape[0]])[0]
        else:
            r = dec.decode(lp)
        ids = list(r.tokens or [])
        return ids, ctc_forced_align(lp, ids), " ".join(r.words)

    def _segment(self, lp: torch.Tensor, job: _Job, offset: float) -> Segment:
        ids, spans, wfst_text = self._search(lp)
        tokens = make_tokens(self.tok, ids, spans, lp, offset, self.frame_s)
        lang = self.tok.lang_of(ids)
        words = group_words(self.tok, tokens)
        text = wfst_text if wfst_text is not None else self.tok.decode(ids)
        start, end = job.start / SAMPLING_RATE, job.end / SAMPLING_RATE
        return Segment(start, end, text, lang, words)


def transcribe_sources(inference, sources: Sequence[Union[AudioSource, Callable[[], AudioSource]]],
                       opts: TranscribeOptions, progress: Optional[Progress] = None,
                       names: Optional[Sequence[str]] = None
                       ) -> Tuple[List[Optional[Transcript]], List[Tuple[str, str]]]:
    """Core of transcribe_files / transcribe_arrays.

    `sources` are AudioSources or callables opening one (raising MlmaError for unreadable input); `names` name
    them in errors. Returns (one Transcript or None (failed) per source, in order; (name, message) per failure).
    """
    opts.validate()
    dec = _Decoder(inference, opts)
    t_start = time.perf_counter()
    opened: List[Optional[AudioSource]] = []
    failed: Dict[int, str] = {}
    plans: List[List] = []
    for i, s in enumerate(sources):
        try:
            src = s() if callable(s) else s
            if src.num_samples < MIN_SECONDS * SAMPLING_RATE:
                raise MlmaError(f"{src.name}: audio too short ({src.duration:.3f} s); need at least {MIN_SECONDS} s")
            segs, how = plan_segments(src, opts.max_segment_seconds, opts.context_seconds, opts.vad,
                                      VadConfig(pad=opts.vad_pad))
            if how != "whole":
                log.info("%s: %.1f s cut into %d segments (%s)", src.name, src.duration, len(segs), how)
        except MlmaError as err:
            failed[i] = str(err)
            log.debug("%s", err)
            opened.append(None)
            plans.append([])
            continue
        opened.append(src)
        plans.append(segs)
    jobs = [_Job(i, k, g.start, g.end, g.left, g.right, len(segs) == 1 and g.left == 0 and g.right == src.num_samples)
            for i, (src, segs) in enumerate(zip(opened, plans)) if src is not None for k, g in enumerate(segs)]
    remaining = Counter(j.src for j in jobs)
    results: Dict[Tuple[int, int], Segment] = {}
    seconds = Counter()  # processing time per source
    lengths: Dict[int, int] = {}  # real length of whole-read sources
    total = sum(opened[j.src].duration for j in jobs if j.whole) + sum((j.end - j.start) / SAMPLING_RATE
                                                                     for j in jobs if not j.whole)
    done = 0.0
    planning = time.perf_counter() - t_start
    for batch in batches(jobs, opts.decode.max_duration, seconds=lambda j: (j.right - j.left) / SAMPLING_RATE,
                         max_items=opts.batch_size):
        t0 = time.perf_counter()
        ok, audios = [], []
        for j in batch:
            if j.src in failed:
                continue
            try:
                src = opened[j.src]
                a = src.read(0, None) if j.whole else src.read(j.left, j.right)
                if j.whole:  # the header's length was an estimate: the decoded audio decides
                    if len(a) < MIN_SECONDS * SAMPLING_RATE:
                        raise MlmaError(f"{src.name}: audio too short ({len(a) / SAMPLING_RATE:.3f} s decoded); "
                                        f"need at least {MIN_SECONDS} s")
                    lengths[j.src] = len(a)
                    j.end = j.right = len(a)
            except MlmaError as err:
                failed[j.src] = str(err)
                continue
            ok.append(j)
            audios.append(a)
        if ok:
            for j, seg in zip(ok, dec(audios, ok)):
                results[(j.src, j.seg)] = seg
        dt = time.perf_counter() - t0
        audio_s = sum(len(a) for a in audios) or 1
        for j, a in zip(ok, audios):
            seconds[j.src] += dt * len(a) / audio_s
        for j in batch:
            remaining[j.src] -= 1
            if remaining[j.src] == 0 and opened[j.src] is not None:
                opened[j.src].release()
            done += (j.end - j.start) / SAMPLING_RATE
        if progress:
            progress(min(done, total), total)
    out: List[Optional[Transcript]] = []
    for i, src in enumerate(opened):
        if src is None or i in failed:
            out.append(None)
            continue
        segs = [results[(i, k)] for k in range(len(plans[i]))]
        duration = lengths.get(i, src.num_samples) / SAMPLING_RATE
        text = " ".join(s.text for s in segs if s.text)
        lang = opts.language or majority_language(segs)
        share = planning * duration / max(total, 1e-9)
        out.append(Transcript(src.name, text, lang, duration, seconds[i] + share, segs))
    errors = [(names[i] if names else (opened[i].name if opened[i] else str(i)), failed[i]) for i in sorted(failed)]
    for name, msg in errors:
        log.debug("%s: %s", name, msg)
    return out, errors


def transcribe_files(inference, paths: Sequence[str], opts: Union[TranscribeOptions, DecodeOptions, None] = None,
                     progress: Optional[Progress] = None, **overrides
                     ) -> Tuple[List[Transcript], List[Tuple[str, str]]]:
    """Transcribe files; unreadable ones are collected as (file, message), the rest still run.

    Args:
        inference: `checkpoint.load_for_inference(...)` (model + tokenizer).
        paths: audio files, directories (recursive), `@list.txt` files or lhotse recordings/cuts manifests
            (see `audio_inputs.collect_inputs`).
        opts: TranscribeOptions, or just the search (DecodeOptions); keyword overrides of any TranscribeOptions
            field, e.g. `batch_size=16, language="de", vad="none"`.
        progress: called after each batch with (audio seconds done, total).
    Returns:
        (transcripts of the readable inputs in input order, [(input, error message)] of the others).
    """
    topts = TranscribeOptions.make(opts, **overrides)
    inputs = collect_inputs([str(p) for p in paths])
    res, errors = transcribe_sources(inference, [(lambda inp=inp: open_source(inp)) for inp in inputs], topts,
                                     progress, names=[inp.name for inp in inputs])
    return [r for r in res if r is not None], errors


def transcribe_arrays(inference, arrays: Sequence[np.ndarray], opts: Union[TranscribeOptions, DecodeOptions, None] = None,
                      names: Optional[Sequence[str]] = None, sample_rate: int = SAMPLING_RATE,
                      progress: Optional[Progress] = None, **overrides) -> List[Transcript]:
    """Transcribe in-memory audio: 1-D float arrays (mono, [-1, 1]) at `sample_rate` (resampled to 16 kHz).

    Same options as `transcribe_files`; `names` (default "0", "1", ...) become `Transcript.file`.
    Raises ValueError for an array that is not 1-D or shorter than 0.05 s.
    """
    from mlma_cli.data.audio import resample

    topts = TranscribeOptions.make(opts, **overrides)
    names = [str(n) for n in names] if names is not None else [str(i) for i in range(len(arrays))]
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} names for {len(arrays)} arrays")
    sources = []
    for name, a in zip(names, arrays):
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D (mono) array, got shape {a.shape}")
        if len(a) < MIN_SECONDS * sample_rate:
            raise ValueError(f"{name}: audio too short ({len(a) / sample_rate:.3f} s); need at least {MIN_SECONDS} s")
        sources.append(ArraySource(name, resample(a, int(sample_rate), SAMPLING_RATE)))
    res, errors = transcribe_sources(inference, sources, topts, progress, names=names)
    if errors:
        raise MlmaError(f"{errors[0][0]}: {errors[0][1]}")
    return [r for r in res if r is not None]
