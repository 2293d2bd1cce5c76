"""CTC alignments -> token/word times: against brute force, and word boundaries of real (espeak-ng) audio."""
from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.test_transcribe import make_checkpoint, make_tokenizer_bytes


def _collapse(path, blank=0):
    out, prev = [], blank
    for c in path:
        if c != blank and c != prev:
            out.append(c)
        prev = c
    return out


def _brute_force_spans(lp, ids):
    """Best-scoring frame path that collapses to `ids`, by enumerating every path (tiny T and V only)."""
    T, V = lp.shape
    best, best_path = -np.inf, None
    for path in itertools.product(range(V), repeat=T):
        if _collapse(path) == list(ids):
            score = sum(lp[t, c] for t, c in enumerate(path))
            if score > best:
                best, best_path = score, path
    spans, k, prev = [], -1, 0
    for t, c in enumerate(best_path):
        if c != 0 and c != prev:
            k += 1
            spans.append([t, t])
        elif c != 0:
            spans[k][1] = t
        prev = c
    return [tuple(s) for s in spans]


@pytest.mark.parametrize("seed", range(6))
def test_forced_alignment_is_the_best_path(seed):
    from mlma_cli.decode.timestamps import ctc_forced_align

    rng = np.random.default_rng(seed)
    T, V = 6, 3
    lp = torch.log_softmax(torch.from_numpy(rng.normal(size=(T, V)) * 2), dim=-1).numpy()
    for ids in ([1], [2, 1], [1, 1], [1, 2, 1]):
        assert ctc_forced_align(lp, ids) == _brute_force_spans(lp, ids), ids
    with pytest.raises(ValueError):
        ctc_forced_align(lp[:2], [1, 1, 1])


def test_aligned_searches_keep_their_results_and_spans_fit():
    from mlma_cli.decode.greedy import ctc_greedy, ctc_greedy_aligned
    from mlma_cli.decode.prefix_beam import ctc_prefix_beam, ctc_prefix_beam_aligned
    from mlma_cli.decode.timestamps import ctc_forced_align

    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(2, 40, 7) * 3, dim=-1)
    lens = torch.tensor([40, 31])
    for (ids, spans), ref, n in zip(ctc_greedy_aligned(lp, lens), ctc_greedy(lp, lens), lens.tolist()):
        assert ids == ref and len(spans) == len(ids)
        best = lp[0 if n == 40 else 1, :n].argmax(-1)
        assert all(int(best[a]) == i and int(best[b]) == i for i, (a, b) in zip(ids, spans))
        # the argmax path is the best alignment of its own collapse
        assert spans == ctc_forced_align(lp[0 if n == 40 else 1, :n], ids)
    ids, spans = ctc_prefix_beam_aligned(lp[0], beam=4)
    assert ids == ctc_prefix_beam(lp[0], beam=4)
    assert all(a <= b < c for (a, b), (c, _) in zip(spans, spans[1:])) and spans[-1][1] < 40


def test_words_from_pieces_drop_language_tags():
    from mlma_cli.data.tokenizer import Tokenizer
    from mlma_cli.decode.results import Token
    from mlma_cli.decode.timestamps import group_words

    tok = Tokenizer.from_bytes(make_tokenizer_bytes())
    ids = [tok.tag_id("en")] + tok.encode("good morning")
    tokens = [Token(i, tok.id_to_piece(i), 0.1 * k, 0.1 * k + 0.04, 0.5 + 0.01 * k) for k, i in enumerate(ids)]
    words = group_words(tok, tokens)
    assert [w.text for w in words] == ["good", "morning"]
    assert words[0].start == pytest.approx(0.1) and words[1].end == pytest.approx(tokens[-1].end)
    assert words[0].confidence == pytest.approx(np.mean([t.confidence for t in words[0].tokens]))
    assert all(t.id != tok.tag_id("en") for w in words for t in w.tokens)


def _speech_bounds(x: np.ndarray, sr: int):
    """First / last sample above 2 % of the peak amplitude (espeak pads its recordings with silence)."""
    idx = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    return int(idx[0]), int(idx[-1]) + 1


WORDS = ["good", "morning", "where", "station", "garden"]
GAPS = [0.3, 0.5, 0.25, 0.8, 0.4, 0.6]  # silence before each word, and after the last


def _word_audio(tmp_path: Path):
    """Single-word espeak-ng recordings concatenated with known silences -> (16 kHz samples, true word times)."""
    from mlma_cli.data.audio import resample

    parts, truth, t = [], [], 0
    for k, w in enumerate(WORDS):
        wav = tmp_path / f"{w}.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(wav), w], check=True, capture_output=True)
        x, sr = sf.read(str(wav), dtype="float32")
        x = resample(x, sr, 16000)
        a, b = _speech_bounds(x, 16000)
        gap = np.zeros(int(GAPS[k] * 16000), dtype=np.float32)
        parts += [gap, x[a:b]]
        t += len(gap)
        truth.append((t / 16000, (t + b - a) / 16000))
        t += b - a
    parts.append(np.zeros(int(GAPS[-1] * 16000), dtype=np.float32))
    return np.concatenate(parts), truth


class PeakyModel(torch.nn.Module):
    """Stands in for a trained model: emits given CTC posteriors, with the real model's subsampling arithmetic."""

    def __init__(self, real, log_probs):
        super().__init__()
        self.real, self.lp = real, log_probs

    def output_lengths(self, lens):
        return self.real.output_lengths(lens)

    def forward(self, x, lens):
        out = self.output_lengths(lens)
        assert int(out.max()) == self.lp.shape[0], "the file must reach the model whole"
        return self.lp.unsqueeze(0).expand(x.shape[0], -1, -1), out


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng makes the test audio")
def _graph(tmp_path, tok):
    """A WFST graph whose LM knows the test words (kaldifst + kaldilm), or a skip when they are missing."""
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldi_decoder")
    from mlma_cli.decode.lm import write_arpa
    from mlma_cli.decode.wfst import build_graph_for_tokenizer

    write_arpa([" ".join(WORDS), "good morning", "where is the station"], tmp_path / "lm.arpa", order=2)
    build_graph_for_tokenizer(tmp_path / "lm.arpa", tok, out_dir=tmp_path / "graph")
    return tmp_path / "graph"


@pytest.mark.parametrize("method", ["ctc-greedy-search", "ctc-prefix-beam-search", "wfst"])
def test_word_times_match_known_boundaries(tmp_path, method):
    """Posteriors peak on each word's first and last frame (tokens in between); times must come back within a frame."""
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.runner import DecodeOptions
    from mlma_cli.decode.timestamps import frame_seconds
    from mlma_cli.decode.transcribe import transcribe_arrays

    audio, truth = _word_audio(tmp_path)
    inf = load_for_inference([make_checkpoint(tmp_path / "m.pt")])
    tok = inf.tokenizer
    fs = frame_seconds(inf.model)
    assert fs == pytest.approx(0.04)  # 10 ms fbank hop, 4x subsampling
    T = int(inf.model.output_lengths(torch.tensor([(len(audio) + 80) // 160]))[0])
    V = tok.vocab_size
    lp = torch.full((T, V), float(np.log(0.1 / (V - 1))))
    lp[:, 0] = float(np.log(0.9))
    peak = [(1, tok.tag_id("en"))]
    for w, (a, b) in zip(WORDS, truth):
        ids = tok.sp.encode(w, out_type=int)
        f0, f1 = int(round(a / fs)), int(round(b / fs)) - 1
        frames = [f0]
        for prev, i in zip(ids, ids[1:]):
            frames.append(frames[-1] + (2 if i == prev else 1))  # a blank between repeated pieces
        if len(ids) > 1:
            assert frames[-1] <= f1
            frames[-1] = f1
        peak += list(zip(frames, ids))
    for f, i in peak:
        lp[f, :] = float(np.log(0.1 / (V - 1)))
        lp[f, i] = float(np.log(0.9))
    fake = SimpleNamespace(model=PeakyModel(inf.model, lp), tokenizer=tok)
    graph = _graph(tmp_path, tok) if method == "wfst" else None
    (res,) = transcribe_arrays(fake, [audio], DecodeOptions(method=method, graph=graph), names=["words"])
    assert [w.text for w in res.words] == WORDS and res.text == " ".join(WORDS)
    assert res.language == "en"
    for w, (a, b) in zip(res.words, truth):
        assert abs(w.start - a) <= fs and abs(w.end - b) <= fs, (w.text, w.start, w.end, a, b)
        assert w.confidence == pytest.approx(0.9, abs=1e-3)
    d = res.to_dict()
    assert d["segments"][0]["words"][0]["tokens"][0]["start"] == round(res.words[0].tokens[0].start, 3)


def test_language_is_detected_and_can_be_forced(tmp_path):
    """The tag the model emits is the language; --language L removes the other tags from the posteriors."""
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.transcribe import transcribe_arrays

    inf = load_for_inference([make_checkpoint(tmp_path / "m.pt")])
    tok = inf.tokenizer
    audio = np.zeros(16000, dtype=np.float32)
    T = int(inf.model.output_lengths(torch.tensor([100]))[0])
    V = tok.vocab_size
    lp = torch.full((T, V), -20.0)
    lp[:, 0] = 0.0
    lp[2, :] = -20.0
    lp[2, tok.tag_id("de")], lp[2, tok.tag_id("en")], lp[2, 0] = np.log(0.6), np.log(0.3), np.log(0.1)
    ids = tok.encode("good")
    for k, i in enumerate(ids):
        lp[5 + 2 * k, :] = -20.0
        lp[5 + 2 * k, i] = 0.0
    fake = SimpleNamespace(model=PeakyModel(inf.model, lp), tokenizer=tok)
    (free,) = transcribe_arrays(fake, [audio])
    (forced,) = transcribe_arrays(fake, [audio], language="en")
    assert free.language == "de" and free.segments[0].language == "de" and free.text == "good"
    assert forced.language == "en" and forced.segments[0].language == "en" and forced.text == "good"
