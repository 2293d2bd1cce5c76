"""`mlma features`: fbank shapes, resampling, speed perturbation, CMVN, Shar, resume, on-the-fly; audio loading."""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet
from typer.testing import CliRunner

import corpus_fixtures as cf
from mlma_cli.cli.main import app
from mlma_cli.data.audio import load_audio, probe_audio
from mlma_cli.data.cmvn import Cmvn, compute_cmvn, load_cmvn, save_cmvn
from mlma_cli.data.corpora import prepare_corpus
from mlma_cli.data.features import compute_features, fbank_extractor
from mlma_cli.data.layout import fbank_dir, find_datasets
from mlma_cli.errors import MlmaError

pytestmark = pytest.mark.skipif(not cf.have_espeak(), reason="espeak-ng not installed")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """LibriSpeech (16 kHz flac), Common Voice de (48 kHz mp3), FLEURS de (8 kHz wav) -> prepare -> features."""
    tmp = tmp_path_factory.mktemp("feat")
    data = tmp / "data"
    prepare_corpus("librispeech", cf.make_librispeech(tmp / "ls", {"train-clean-100": 2, "dev-clean": 1}), data)
    prepare_corpus("commonvoice", cf.make_commonvoice(tmp / "cv", ("de",), per_split=1), data)
    prepare_corpus("fleurs", cf.make_fleurs(tmp / "fl", ("de",), per_split=1, sr=8000), data)
    report = compute_features(data, None, speed_perturb=True, shar=True, shard_size=2)
    return data, report


def _cuts(data, name):
    return CutSet.from_file(fbank_dir(data, *name.split("/")) / "cuts.jsonl.gz").to_eager()


def test_fbank_shapes_and_resampling(data):
    data, report = data
    assert {d.dataset for d in report.datasets} == set(find_datasets(data))
    assert all(d.status == "computed" for d in report.datasets)
    for name in ("commonvoice/de/dev", "fleurs/de/dev", "librispeech/en/dev-clean"):
        for cut in _cuts(data, name):
            feats = cut.load_features()
            assert feats.shape == (cut.num_frames, 80)
            assert abs(feats.shape[0] - cut.duration * 100) <= 2
            assert cut.sampling_rate == 16000 and cut.recording.sampling_rate == 16000  # 48 kHz mp3 / 8 kHz wav resampled
            assert cut.load_audio().shape[1] == pytest.approx(cut.duration * 16000, abs=2)
            assert np.isfinite(feats).all() and feats.std() > 0.5


def test_speed_perturbation_training_only(data):
    data, _ = data
    train = _cuts(data, "fleurs/de/train")
    base = [c for c in train if "_sp" not in c.id]
    assert len(train) == 3 * len(base) == 3
    by_id = {c.id: c for c in train}
    b = base[0]
    assert by_id[f"{b.id}_sp0.9"].duration == pytest.approx(b.duration / 0.9, abs=0.01)
    assert by_id[f"{b.id}_sp1.1"].duration == pytest.approx(b.duration / 1.1, abs=0.01)
    assert by_id[f"{b.id}_sp0.9"].load_features().shape[0] > b.load_features().shape[0]
    assert len(_cuts(data, "fleurs/de/dev")) == 1
    meta = json.loads((fbank_dir(data, "fleurs", "de", "dev") / "features.json").read_text())
    assert meta["speed_perturb"] is False and meta["mode"] == "stored" and meta["num_mel_bins"] == 80


def test_cmvn_matches_numpy(data):
    data, report = data
    cmvn = load_cmvn(data / "fbank" / "cmvn.json")
    assert report.cmvn_path == data / "fbank" / "cmvn.json"
    train = [n for n in find_datasets(data, kind="fbank") if n.split("/")[2].startswith("train")]
    assert len(train) == 3
    allf = np.concatenate([c.load_features() for n in train for c in _cuts(data, n)])
    assert cmvn.frames == allf.shape[0] == report.cmvn_frames
    np.testing.assert_allclose(cmvn.mean, allf.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cmvn.std, allf.std(0), rtol=1e-3, atol=1e-3)
    assert cmvn.mean.shape == (80,) and json.loads((data / "fbank/cmvn.json").read_text()).keys() >= {"mean", "std", "frames"}


def test_shar_readable(data):
    data, _ = data
    shar_dir = fbank_dir(data, "commonvoice", "de", "train") / "shar"
    assert sorted(p.name for p in shar_dir.iterdir()) == [
        "cuts.000000.jsonl.gz", "cuts.000001.jsonl.gz", "features.000000.tar", "features.000001.tar",
    ]
    stored = {c.id: c.load_features() for c in _cuts(data, "commonvoice/de/train")}
    shar = list(CutSet.from_shar(in_dir=shar_dir))
    assert {c.id for c in shar} == set(stored)
    for c in shar:
        np.testing.assert_array_equal(c.load_features(), stored[c.id])
        assert c.supervisions[0].language == "de"


def test_resume_skips_complete_and_cleans_stale(data):
    data, _ = data
    out = fbank_dir(data, "librispeech", "en", "dev-clean")
    stamp = (out / "feats" / "feats-0.lca").stat().st_mtime_ns
    (out / ".feats.tmp999").mkdir()  # left by an interrupted run
    rep = compute_features(data, ["librispeech/en/dev-clean"], speed_perturb=True, shar=True, shard_size=2)
    assert rep.datasets[0].status == "skipped"
    assert (out / "feats" / "feats-0.lca").stat().st_mtime_ns == stamp
    rep = compute_features(data, ["librispeech/en/dev-clean"], speed_perturb=True, shar=True, shard_size=2, overwrite=True)
    assert rep.datasets[0].status == "computed" and not (out / ".feats.tmp999").exists()
    # re-prepared manifests (newer than features.json) are recomputed without --overwrite
    src = data / "manifests/librispeech/en/dev-clean/cuts.jsonl.gz"
    later = time.time() + 5
    os.utime(src, (later, later))
    rep = compute_features(data, ["librispeech/en/dev-clean"], speed_perturb=True, shar=True, shard_size=2)
    assert rep.datasets[0].status == "computed"
    os.utime(src, (later - 3600, later - 3600))


def test_on_the_fly_mode(data, tmp_path):
    data, _ = data
    d2 = tmp_path / "data"
    shutil.copytree(data / "manifests", d2 / "manifests")
    rep = compute_features(d2, ["fleurs/de/train", "fleurs/de/dev"], on_the_fly=True, speed_perturb=True, shar=True)
    cuts = _cuts(d2, "fleurs/de/train")
    assert len(cuts) == 3 and not any(c.has_features for c in cuts)
    meta = json.loads((fbank_dir(d2, "fleurs", "de", "train") / "features.json").read_text())
    assert meta["mode"] == "on_the_fly" and meta["num_mel_bins"] == 80
    assert not (fbank_dir(d2, "fleurs", "de", "train") / "feats").exists()
    feats = cuts[0].compute_features(fbank_extractor())
    assert feats.shape[1] == 80 and abs(feats.shape[0] - cuts[0].duration * 100) <= 2
    # Shar in on-the-fly mode carries 16 kHz flac audio instead of features
    shar = list(CutSet.from_shar(in_dir=fbank_dir(d2, "fleurs", "de", "train") / "shar"))
    assert len(shar) == 3 and shar[0].sampling_rate == 16000
    assert shar[0].load_audio().shape[1] == pytest.approx(shar[0].duration * 16000, abs=2)
    # CMVN is still written, from features computed on the fly
    assert rep.cmvn_frames > 0 and load_cmvn(d2 / "fbank/cmvn.json").frames == rep.cmvn_frames


def test_parallel_jobs_match_in_process(data, tmp_path, monkeypatch):
    """--jobs 2 goes through the spawn worker pool (chunked lilcom files) and gives the same features."""
    from mlma_cli.data import features as fm

    data, _ = data
    d2 = tmp_path / "data"
    shutil.copytree(data / "manifests", d2 / "manifests")
    monkeypatch.setattr(fm._Workers, "MIN_CUTS_PER_JOB", 1)
    rep = compute_features(d2, ["commonvoice/de/train"], num_jobs=2, speed_perturb=True)
    assert rep.datasets[0].cuts == 3
    files = sorted(p.name for p in (fbank_dir(d2, "commonvoice", "de", "train") / "feats").iterdir())
    assert files == ["feats-0.lca", "feats-1.lca", "feats-2.lca"]
    ref = {c.id: c.load_features() for c in _cuts(data, "commonvoice/de/train")}
    for c in _cuts(d2, "commonvoice/de/train"):
        np.testing.assert_allclose(c.load_features(), ref[c.id], atol=0.05)


def test_cli_features(data, tmp_path):
    data, _ = data
    runner = CliRunner()
    res = runner.invoke(app, ["features", "--data-dir", str(data), "fleurs/de/dev", "--speed-perturb", "--shar", "--shard-size", "2"])
    assert res.exit_code == 0, res.output
    assert "fleurs/de/dev" in res.output and "skipped" in res.output
    res = runner.invoke(app, ["features", "--data-dir", str(data)])
    assert res.exit_code != 0 and isinstance(res.exception, MlmaError)
    res = runner.invoke(app, ["features", "--data-dir", str(tmp_path / "none"), "fleurs/de/train"])
    assert isinstance(res.exception, MlmaError) and "mlma prepare" in str(res.exception)


def test_cmvn_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(2.0, 3.0, (50, 4)), rng.normal(-1.0, 0.5, (70, 4))
    c = compute_cmvn([a, b])
    both = np.concatenate([a, b])
    np.testing.assert_allclose(c.mean, both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(c.std, both.std(0), rtol=1e-5)
    save_cmvn(tmp_path / "c.json", c)
    back = load_cmvn(tmp_path / "c.json")
    assert back.frames == 120 and np.allclose(back.mean, c.mean)
    with pytest.raises(MlmaError, match="not found"):
        load_cmvn(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"mean": [1], "std": [0], "frames": 3}')
    with pytest.raises(MlmaError, match="bad.json"):
        load_cmvn(tmp_path / "bad.json")
    assert isinstance(c, Cmvn)


def test_load_audio_formats(tmp_path):
    x = cf.speech("guten morgen", "de", 44100)
    sf.write(tmp_path / "st.wav", np.stack([x, 0.5 * x], 1), 44100)  # stereo 44.1 kHz
    cf.write_audio(tmp_path / "a.mp3", cf.speech("guten morgen", "de", 48000), 48000)
    cf.write_audio(tmp_path / "a.opus", cf.speech("guten morgen", "de", 48000), 48000)
    cf.write_audio(tmp_path / "a8.wav", cf.speech("guten morgen", "de", 8000), 8000)
    cf.write_audio(tmp_path / "a.flac", cf.speech("guten morgen", "de"), 16000)
    n16 = len(cf.speech("guten morgen", "de"))
    for name in ("st.wav", "a.mp3", "a.opus", "a8.wav", "a.flac"):
        y, sr = load_audio(tmp_path / name)
        assert sr == 16000 and y.ndim == 1 and y.dtype == np.float32
        assert abs(len(y) - n16) < 0.02 * n16, name
    assert probe_audio(tmp_path / "a.mp3").sampling_rate == 48000
    (tmp_path / "junk.mp3").write_bytes(b"\x00junk" * 100)
    with pytest.raises(MlmaError, match="junk.mp3"):
        load_audio(tmp_path / "junk.mp3")
    with pytest.raises(MlmaError, match="nothere.wav"):
        load_audio(tmp_path / "nothere.wav")
