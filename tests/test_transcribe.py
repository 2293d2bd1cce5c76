"""`mlma transcribe` on every listed audio format with a tiny random-weight checkpoint; bad files named."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import torch

SENTENCES = {
    "en": ["the cat sat on the mat", "good morning to you", "where is the station"],
    "de": ["guten morgen zusammen", "der hund schläft im garten", "wo ist der bahnhof"],
}


def make_tokenizer_bytes(vocab_size: int = 40) -> bytes:
    """A SentencePiece model with mlma's conventions (blank <blk> = 0, <unk> = 1, language tags)."""
    import sentencepiece as spm

    from mlma_cli.text.normalize import LANGUAGES

    text = [s for ss in SENTENCES.values() for s in ss] * 5
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buf, model_type="unigram", vocab_size=vocab_size,
        character_coverage=1.0, pad_id=0, pad_piece="<blk>", unk_id=1, unk_piece="<unk>", bos_id=-1, eos_id=-1,
        hard_vocab_limit=False, user_defined_symbols=[f"<{l}>" for l in LANGUAGES], minloglevel=2,
    )
    return buf.getvalue()


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny random-weight ConMamba checkpoint saved with the training engineer's save_checkpoint."""
    from mlma_cli.checkpoint import save_checkpoint
    from mlma_cli.data.tokenizer import Tokenizer
    from mlma_cli.model import ModelConfig, build_model

    tok_bytes = make_tokenizer_bytes()
    tok = Tokenizer.from_bytes(tok_bytes)
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder="conmamba", d_model=32, num_layers=1, ffn_dim=64, vocab_size=tok.vocab_size,
                      subsampling_channels=(8, 8), conv_kernel=7, d_state=4, scan_backend="torch")
    model = build_model(cfg)
    save_checkpoint(path, {
        "model_config": cfg.to_dict(), "model": model.state_dict(), "averaged_model": None, "num_averaged": 0,
        "tokenizer": tok_bytes, "tokenizer_lang_tags": tok.lang_tags, "train_config": {}, "data_config": {},
        "optimizer": None, "scheduler": None, "sampler": None, "rng": None, "step": 0, "epoch": 0,
        "metrics": {"valid_loss": None},
    })
    return path


def espeak(text: str, lang: str, out: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", lang, "-w", str(out), text], check=True, capture_output=True)
    return out


def make_audio_formats(d: Path) -> dict:
    """wav (22.05 kHz mono), stereo 44.1 kHz wav, 8 kHz wav, flac, mp3, ogg/vorbis, opus -> paths."""
    base = espeak("guten morgen zusammen", "de", d / "base.wav")
    ff = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(base)]
    out = {"wav": base}
    specs = {
        "stereo.wav": ["-ac", "2", "-ar", "44100"], "8k.wav": ["-ar", "8000"], "flac": ["-c:a", "flac"],
        "mp3": ["-c:a", "libmp3lame"], "ogg": ["-c:a", "libvorbis"], "opus": ["-c:a", "libopus", "-ar", "48000"],
    }
    for name, args in specs.items():
        p = d / f"speech.{name}"
        subprocess.run(ff + args + [str(p)], check=True, capture_output=True)
        out[name] = p
    return out


needs_tools = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("ffmpeg")),
                                 reason="espeak-ng and ffmpeg are needed to make test audio (tools/setup_env.sh installs them)")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@needs_tools
def test_transcribe_every_format_and_names_bad_files(tmp_path, ckpt):
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.runner import DecodeOptions
    from mlma_cli.decode.transcribe import transcribe_files

    files = make_audio_formats(tmp_path)
    info = {k: sf.info(str(v)) for k, v in files.items()}
    assert info["stereo.wav"].channels == 2 and info["8k.wav"].samplerate == 8000
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"not audio at all" * 10)
    missing = tmp_path / "missing.flac"
    paths = [str(files["wav"]), str(bad), *[str(p) for k, p in files.items() if k != "wav"], str(missing)]
    inf = load_for_inference([ckpt], device="cpu")
    results, errors = transcribe_files(inf, paths, DecodeOptions())
    assert [r.file for r in results] == [p for p in paths if p not in (str(bad), str(missing))]
    assert [e[0] for e in errors] == [str(bad), str(missing)]
    assert "broken.mp3" in errors[0][1]
    assert "missing.flac" in errors[1][1]
    durations = {Path(r.file).name: r.duration for r in results}
    # every format decodes to about the same length of speech
    ref = durations["base.wav"]
    assert all(abs(d - ref) < 0.1 for d in durations.values()), durations
    assert all(isinstance(r.text, str) for r in results)
    # the same audio through wav and flac (lossless) gives the same transcript
    by = {Path(r.file).name: r.text for r in results}
    assert by["base.wav"] == by["speech.flac"]


@needs_tools
def test_transcribe_cli_json_and_exit_status(tmp_path, ckpt):
    from typer.testing import CliRunner

    from mlma_cli.cli.main import app

    wav = espeak("hello world", "en", tmp_path / "a.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage")
    runner = CliRunner()
    ok = runner.invoke(app, ["transcribe", str(wav), "--checkpoint", str(ckpt), "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["errors"] == [] and doc["results"][0]["file"] == str(wav) and doc["results"][0]["duration"] > 0.3
    res = runner.invoke(app, ["transcribe", str(wav), str(bad), "--checkpoint", str(ckpt),
                              "--method", "ctc-prefix-beam-search"])
    assert res.exit_code == 1
    assert "bad.wav" in res.output and "1 of 2 files could not be transcribed" in res.output
    assert str(wav) in res.output


def _utterances(tmp_path: Path):
    """Three espeak-ng files of different lengths (16 kHz after loading)."""
    texts = [("en", "the cat sat on the mat"), ("de", "guten morgen"), ("en", "where is the station good morning to you")]
    return [espeak(t, l, tmp_path / f"u{k}.wav") for k, (l, t) in enumerate(texts)]


@needs_tools
def test_batched_results_equal_one_by_one(tmp_path, ckpt):
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.transcribe import transcribe_files

    files = [str(p) for p in _utterances(tmp_path)] * 2
    inf = load_for_inference([ckpt], device="cpu")
    one, _ = transcribe_files(inf, files, batch_size=1)
    many, _ = transcribe_files(inf, files, batch_size=4, max_segment_seconds=30)
    assert [r.file for r in many] == files  # input order, though batches go longest first
    for a, b in zip(one, many):
        assert a.text == b.text and [t.id for t in a.tokens] == [t.id for t in b.tokens]
        assert [(t.start, t.end) for t in a.tokens] == [(t.start, t.end) for t in b.tokens]
        assert [t.confidence for t in a.tokens] == pytest.approx([t.confidence for t in b.tokens], abs=1e-4)


def test_options_reject_bad_values_early():
    from mlma_cli.decode.transcribe import TranscribeOptions
    from mlma_cli.errors import MlmaError

    for kw in ({"vad": "webrtc"}, {"batch_size": 0}, {"language": "xx"}, {"max_segment_seconds": 0}):
        with pytest.raises(MlmaError):
            TranscribeOptions.make(None, **kw).validate()
    with pytest.raises(TypeError):
        TranscribeOptions.make(None, bogus=1)
    o = TranscribeOptions.make(None, lang="de", chunk_seconds=10, method="ctc-prefix-beam-search", beam=8)
    assert (o.language, o.max_segment_seconds, o.decode.method, o.decode.beam) == ("de", 10, "ctc-prefix-beam-search", 8)


@needs_tools
def test_manifest_items_fail_alone(tmp_path, ckpt):
    from lhotse import AudioSource, Recording, RecordingSet

    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.transcribe import transcribe_files

    good = Recording.from_file(espeak("hello world", "en", tmp_path / "g.wav"), recording_id="good")
    gone = Recording(id="gone", sources=[AudioSource(type="file", channels=[0], source=str(tmp_path / "x.wav"))],
                     sampling_rate=16000, num_samples=16000, duration=1.0)
    RecordingSet.from_recordings([gone, good]).to_file(tmp_path / "recs.jsonl.gz")
    res, errors = transcribe_files(load_for_inference([ckpt]), [str(tmp_path / "recs.jsonl.gz")])
    assert [r.file for r in res] == ["good"] and res[0].duration == pytest.approx(good.duration, abs=0.01)
    assert [e[0] for e in errors] == ["gone"] and errors[0][1].startswith("gone: ")


def test_too_short_audio_is_an_error(tmp_path, ckpt):
    import numpy as np

    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.transcribe import transcribe_arrays, transcribe_files

    inf = load_for_inference([ckpt])
    with pytest.raises(ValueError, match="too short"):
        transcribe_arrays(inf, [np.zeros(100, dtype=np.float32)])
    p = tmp_path / "tiny.wav"
    sf.write(str(p), np.zeros(160, dtype=np.float32), 16000)
    res, errors = transcribe_files(inf, [str(p)])
    assert res == [] and "too short" in errors[0][1]


def test_language_masks_the_other_tags(tmp_path, ckpt):
    """`language=` rules out the other languages' tags (a model biased to emit <en> must not, with language='de')."""
    import numpy as np

    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.transcribe import transcribe_arrays

    inf = load_for_inference([ckpt])
    en, de = inf.tokenizer.tag_id("en"), inf.tokenizer.tag_id("de")
    with torch.no_grad():
        inf.model.ctc_head.bias[en] += 50.0
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    free = transcribe_arrays(inf, [audio])[0]
    assert free.language == "en"
    for opts in ({"language": "de"}, {"language": "de", "batch_size": 2}):
        for r in transcribe_arrays(inf, [audio, audio], **opts):
            assert r.language in (None, "de") and all(s.language in (None, "de") for s in r.segments)
