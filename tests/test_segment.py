"""Long-audio segmentation: VAD regions end in pauses, forced splits get context, windows fall back, streamed reads."""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_transcribe import make_checkpoint

SR = 16000
needs_espeak = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng makes the test audio")
TEXTS = ["the cat sat on the mat", "guten morgen zusammen", "where is the station", "good morning to you"]


def _speech(text: str, path: Path) -> np.ndarray:
    from mlma_cli.data.audio import resample

    subprocess.run(["espeak-ng", "-v", "en", "-w", str(path), text], check=True, capture_output=True)
    x, sr = sf.read(str(path), dtype="float32")
    x = resample(x, sr, SR)
    idx = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    return x[idx[0] : idx[-1] + 1]


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory):
    """Four utterances with pauses of 0.8-1.7 s -> (16 kHz samples, true speech intervals in seconds)."""
    d = tmp_path_factory.mktemp("long")
    parts, truth, t = [], [], 0
    for k, text in enumerate(TEXTS):
        x = _speech(text, d / f"{k}.wav")
        gap = np.zeros(int((0.8 + 0.3 * k) * SR), dtype=np.float32)
        parts += [gap, x]
        t += len(gap)
        truth.append((t / SR, (t + len(x)) / SR))
        t += len(x)
    parts.append(np.zeros(SR // 2, dtype=np.float32))
    return np.concatenate(parts), truth


def test_speech_regions_from_probabilities():
    from mlma_cli.decode.segment import VadConfig, speech_regions

    hop = 0.1
    p = np.array([0, 0, .9, .9, .4, .9, 0, 0, 0, 0, .8, .8, .8, 0, 0, 0, .9, 0, 0, 0], dtype=np.float32)
    cfg = VadConfig(threshold=0.5, neg_threshold=0.35, min_silence=0.3, min_speech=0.15, pad=0.05)
    regions = speech_regions(p, hop, cfg)
    # the dip to 0.4 is above neg_threshold (no break); the lone 0.9 at frame 16 is shorter than min_speech
    assert np.ravel(regions).tolist() == pytest.approx([0.15, 0.65, 0.95, 1.35])


def test_split_at_minimum_cuts_at_the_lowest_point():
    from mlma_cli.decode.segment import split_at_minimum

    score = np.ones(100)
    score[70] = 0.1  # quietest point in the second half of the first 80
    score[30] = 0.0  # lower, but in the first half: a piece that short is not wanted
    assert split_at_minimum(0, 100, score, hop=1, max_len=80) == [70]
    cuts = split_at_minimum(0, 1000, np.ones(1000), hop=10, max_len=300)
    assert all(b - a <= 300 for a, b in zip([0, *cuts], [*cuts, 1000]))


@needs_espeak
def test_silero_segments_end_in_pauses(long_audio):
    from mlma_cli.decode.audio_inputs import ArraySource
    from mlma_cli.decode.segment import VadConfig, plan_segments

    audio, truth = long_audio
    segs, how = plan_segments(ArraySource("a", audio), max_seconds=3.0, context_seconds=0.5, vad="silero",
                              vad_config=VadConfig(pad=0.15))
    assert how == "silero" and len(segs) == len(truth)
    for s, (a, b) in zip(segs, truth):
        assert s.start / SR <= a and b <= s.end / SR  # each utterance inside its segment
        assert (s.left, s.right) == (s.start, s.end)  # cut in pauses: no context needed
    for s, t in zip(segs[1:], truth[:-1]):
        assert s.start / SR > t[1]  # and nothing of the previous utterance


@needs_espeak
def test_long_speech_is_split_with_context_and_windows_fall_back(long_audio, caplog, monkeypatch):
    from mlma_cli.decode import segment
    from mlma_cli.decode.audio_inputs import ArraySource

    audio, truth = long_audio
    src = ArraySource("a", audio)
    # no pause long enough: a split inside speech, with context on the open sides, pieces <= max
    segs, _ = segment.plan_segments(src, max_seconds=0.8, context_seconds=0.25, vad="silero")
    assert all(s.end - s.start <= 0.8 * SR for s in segs)
    inner = [(a, b) for a, b in zip(segs, segs[1:]) if a.end == b.start]
    assert inner and all(a.right > a.end and b.left < b.start for a, b in inner)
    # vad none: contiguous windows, cut at the quietest stretch (here: inside the pauses)
    wins, how = segment.plan_segments(src, max_seconds=3.0, context_seconds=0.5, vad="none")
    assert how == "windows" and wins[0].start == 0 and wins[-1].end == len(audio)
    assert all(a.end == b.start for a, b in zip(wins, wins[1:]))
    for w in wins[:-1]:
        assert not any(a < w.end / SR < b for a, b in truth)
    # silero-vad missing: the windows, and a log line saying so
    monkeypatch.setattr(segment, "_SILERO", None)
    monkeypatch.setattr(segment, "_silero_failed", False)
    monkeypatch.setattr("silero_vad.load_silero_vad", lambda: (_ for _ in ()).throw(ImportError("no silero")))
    with caplog.at_level(logging.WARNING):
        again, how = segment.plan_segments(src, max_seconds=3.0, context_seconds=0.5, vad="silero")
    assert how == "windows" and again == wins and "fixed windows" in caplog.text


@needs_espeak
def test_segmented_transcripts_have_file_times(long_audio, tmp_path):
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.transcribe import transcribe_arrays

    audio, truth = long_audio
    inf = load_for_inference([make_checkpoint(tmp_path / "m.pt")])
    (r,) = transcribe_arrays(inf, [audio], max_segment_seconds=3.0, batch_size=3)
    assert len(r.segments) == len(truth) and r.duration == pytest.approx(len(audio) / SR)
    assert r.text == " ".join(s.text for s in r.segments if s.text)
    for s in r.segments:
        for t in s.tokens:
            assert s.start - 1e-6 <= t.start < t.end <= s.end + 0.05
    starts = [t.start for t in r.tokens]
    assert starts == sorted(starts)
    (one,) = transcribe_arrays(inf, [audio], max_segment_seconds=3.0, batch_size=1)  # segments one by one
    assert [(s.start, s.end, s.text) for s in one.segments] == [(s.start, s.end, s.text) for s in r.segments]
    assert [(t.id, t.start) for t in one.tokens] == [(t.id, t.start) for t in r.tokens]


def test_streamed_reads_match_whole_file_loading(tmp_path):
    from mlma_cli.data.audio import load_audio
    from mlma_cli.decode.audio_inputs import Input, StreamedFile, open_source

    rng = np.random.default_rng(0)
    t = np.arange(int(3.0 * 22050)) / 22050
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    p = tmp_path / "x.flac"
    sf.write(str(p), np.stack([x, -x * 0.5], axis=1), 22050)
    whole, _ = load_audio(p)
    src = open_source(Input(str(p)), stream_seconds=1.0)
    assert isinstance(src, StreamedFile) and abs(src.num_samples - len(whole)) <= 1
    for a, b in [(0, 4000), (12345, 30000), (40000, src.num_samples)]:
        part = src.read(a, b)
        assert len(part) == b - a
        assert np.abs(part - whole[a:b]).max() < 2e-3
