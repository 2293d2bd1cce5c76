"""Bad corpus input: skipped-and-listed items, clear one-line errors, exit codes, nothing half-written."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import corpus_fixtures as cf
from mlma_cli.cli.main import app
from mlma_cli.data import features as feats_mod
from mlma_cli.data.bad_items import read_bad_items
from mlma_cli.data.corpora import prepare_corpus
from mlma_cli.data.layout import fbank_dir, manifest_dir
from mlma_cli.errors import MlmaError

pytestmark = pytest.mark.skipif(not cf.have_espeak(), reason="espeak-ng not installed")
REPO = Path(__file__).resolve().parents[1]


def _reasons(report):
    return {b.id: b.reason for b in read_bad_items(report.bad_items_path)}


def test_librispeech_corrupt_and_missing(tmp_path):
    root = cf.make_librispeech(tmp_path / "ls", {"dev-clean": 3})
    chapter = root / "LibriSpeech/dev-clean/103/1240"
    (chapter / "103-1240-0000.flac").write_bytes(b"fLaC" + b"\x00" * 64)  # corrupt
    sf.write(chapter / "103-1240-0009.flac", np.zeros(0, dtype=np.float32), 16000)  # no transcript line
    with open(chapter / "103-1240.trans.txt", "a") as f:
        f.write("103-1240-0007 AUDIO FILE IS MISSING\n")
    rep = prepare_corpus("librispeech", root, tmp_path / "data")
    reasons = _reasons(rep)
    assert "corrupt" in reasons["103-1240-0000"] or "unreadable" in reasons["103-1240-0000"]
    assert reasons["103-1240-0009"] == "missing transcript"
    assert "not found" in reasons["103-1240-0007"]
    assert rep.rows[0].utterances == 2 and rep.rows[0].skipped == 3 and rep.num_bad == 3
    rows = read_bad_items(rep.bad_items_path)
    assert all(r.lang == "en" and r.split == "dev-clean" for r in rows)
    assert any(r.file.endswith("103-1240-0000.flac") for r in rows)
    assert rep.bad_items_path.read_text().splitlines()[0] == "id\tfile\treason\tlang\tsplit"


def test_commonvoice_empty_transcript_truncated_mp3_foreign_locale(tmp_path):
    root = cf.make_commonvoice(tmp_path / "cv", ("de",), per_split=1)
    ldir = root / "de"
    good = ldir / "clips/common_voice_de_0000.mp3"
    shutil.copy(good, ldir / "clips/empty.mp3")
    trunc = ldir / "clips/trunc.mp3"
    trunc.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])  # truncated download
    shutil.copy(good, ldir / "clips/pt.mp3")
    rows = [
        cf.cv_row("common_voice_de_0000.mp3", "Guten Morgen.", "de"),
        cf.cv_row("empty.mp3", "", "de"),
        cf.cv_row("trunc.mp3", "Das Haus ist groß.", "de"),
        cf.cv_row("pt.mp3", "Bom dia.", "pt"),
    ]
    cf.write_cv_tsv(ldir / "train.tsv", rows)
    rep = prepare_corpus("commonvoice", root, tmp_path / "data", splits=["train"])
    reasons = _reasons(rep)
    assert reasons["empty"] == "empty transcript"
    assert "truncated" in reasons["trunc"]
    assert "'pt'" in reasons["pt"]
    assert rep.rows[0].utterances == 1 and rep.rows[0].skipped == 3
    # full decoding catches it too, and measures the good clip's exact length
    rep = prepare_corpus("commonvoice", root, tmp_path / "d2", splits=["train"], full_decode=True)
    assert "truncated" in _reasons(rep)["trunc"] and rep.rows[0].utterances == 1


def test_too_long_only_for_training_too_short_zero_length(tmp_path):
    root = cf.make_fleurs(tmp_path / "fl", ("de",), per_split=2)
    audio = root / "de_de/audio"
    long_x = np.concatenate([cf.speech("guten morgen", "de")] * 3)  # > 2 s
    for split in ("train", "dev"):
        sf.write(audio / split / "long.wav", long_x, 16000)
        with open(root / "de_de" / f"{split}.tsv", "a") as f:
            f.write(cf.fleurs_row(7, "long.wav", "Guten Morgen.", len(long_x)))
    sf.write(audio / "train/short.wav", np.zeros(800, dtype=np.float32), 16000)  # 0.05 s
    sf.write(audio / "train/zero.wav", np.zeros(0, dtype=np.float32), 16000)  # zero-length
    with open(root / "de_de/train.tsv", "a") as f:
        f.write(cf.fleurs_row(8, "short.wav", "Ja.", 800) + cf.fleurs_row(9, "zero.wav", "Nein.", 0))
    rep = prepare_corpus("fleurs", root, tmp_path / "data", max_duration=2.0, max_duration_eval=10.0)
    reasons = _reasons(rep)
    assert "too long" in reasons["long"] and "--max-duration" in reasons["long"]
    assert "too short" in reasons["short"]
    assert reasons["zero"] == "zero-length audio"
    by_split = {r.split: r for r in rep.rows}
    assert by_split["train"].skipped == 3 and by_split["train"].utterances == 2
    assert by_split["dev"].skipped == 0 and by_split["dev"].utterances == 3  # eval bound is the larger one


def test_unknown_language(tmp_path):
    root = cf.make_commonvoice(tmp_path / "cv", ("de",), per_split=1)
    with pytest.raises(MlmaError, match="unknown language code.*xx"):
        prepare_corpus("commonvoice", root, tmp_path / "data", langs=["xx"])
    with pytest.raises(MlmaError, match="English only"):
        prepare_corpus("librispeech", tmp_path, tmp_path / "data", langs=["de"])
    with pytest.raises(MlmaError, match="unknown corpus"):
        prepare_corpus("timit", root, tmp_path / "data")


def test_missing_or_wrong_layout(tmp_path):
    with pytest.raises(MlmaError, match="not found or not a directory"):
        prepare_corpus("fleurs", tmp_path / "nope", tmp_path / "data")
    root = cf.make_commonvoice(tmp_path / "cv", ("de",), per_split=1)
    (root / "de/validated.tsv").unlink()
    with pytest.raises(MlmaError, match=r"validated\.tsv not found; expected an extracted Common Voice release"):
        prepare_corpus("commonvoice", root, tmp_path / "data")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.mp3").write_bytes(b"")
    with pytest.raises(MlmaError, match="no language directory"):
        prepare_corpus("commonvoice", tmp_path / "flat", tmp_path / "data")
    with pytest.raises(MlmaError, match="no LibriSpeech part"):
        prepare_corpus("librispeech", tmp_path / "flat", tmp_path / "data")
    fl = cf.make_fleurs(tmp_path / "fl", ("de",), per_split=1)
    shutil.rmtree(fl / "de_de/audio/dev")
    (fl / "de_de/audio/dev.tar.gz").write_bytes(b"")
    with pytest.raises(MlmaError, match=r"extract .*dev\.tar\.gz"):
        prepare_corpus("fleurs", fl, tmp_path / "data")
    assert not (tmp_path / "data" / "manifests" / "fleurs").exists()


def test_nothing_usable_exits_nonzero(tmp_path):
    root = cf.make_librispeech(tmp_path / "ls", {"dev-clean": 2})
    for flac in (root / "LibriSpeech/dev-clean/103/1240").glob("*.flac"):
        flac.write_bytes(b"garbage")
    res = CliRunner().invoke(app, ["prepare", "librispeech", str(root), "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 1 and isinstance(res.exception, MlmaError)
    assert "no usable utterance" in str(res.exception) and "bad_items.tsv" in str(res.exception)
    assert len(read_bad_items(tmp_path / "data/manifests/librispeech/bad_items.tsv")) == 2
    assert not manifest_dir(tmp_path / "data", "librispeech", "en", "dev-clean").exists()


def test_cli_error_is_one_line_exit_1(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mlma_cli", "prepare", "commonvoice", str(tmp_path / "missing"), "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlma: error: commonvoice:") and "missing" in err[0]
    assert "Traceback" not in proc.stderr


def test_partial_success_exit_0(tmp_path):
    root = cf.make_librispeech(tmp_path / "ls", {"dev-clean": 2})
    (root / "LibriSpeech/dev-clean/103/1240/103-1240-0000.flac").write_bytes(b"garbage")
    res = CliRunner().invoke(app, ["prepare", "librispeech", str(root), "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 0, res.output
    assert "1 item(s) skipped" in res.output and "bad_items.tsv" in res.output


def test_rerun_replaces_own_bad_rows_only(tmp_path):
    root = cf.make_commonvoice(tmp_path / "cv", ("de", "fr"), per_split=1)
    cf.write_cv_tsv(root / "fr/dev.tsv", [cf.cv_row("common_voice_fr_1000.mp3", "", "fr")] +
                    [cf.cv_row("common_voice_fr_0000.mp3", "Bonjour.", "fr")])
    cf.write_cv_tsv(root / "de/dev.tsv", [cf.cv_row("common_voice_de_1000.mp3", "", "de")] +
                    [cf.cv_row("common_voice_de_0000.mp3", "Hallo.", "de")])
    data = tmp_path / "data"
    prepare_corpus("commonvoice", root, data)
    assert {(b.lang, b.id) for b in read_bad_items(data / "manifests/commonvoice/bad_items.tsv")} == {
        ("de", "common_voice_de_1000"), ("fr", "common_voice_fr_1000")}
    cf.write_cv_tsv(root / "de/dev.tsv", [cf.cv_row("common_voice_de_1000.mp3", "Hallo.", "de")])
    prepare_corpus("commonvoice", root, data, langs=["de"])
    assert {(b.lang, b.id) for b in read_bad_items(data / "manifests/commonvoice/bad_items.tsv")} == {
        ("fr", "common_voice_fr_1000")}


def test_interrupted_features_leave_nothing_half_written(tmp_path, monkeypatch):
    data = tmp_path / "data"
    prepare_corpus("fleurs", cf.make_fleurs(tmp_path / "fl", ("de",), per_split=1), data, splits=["dev"])

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(feats_mod, "_fbank_chunk", boom)
    with pytest.raises(KeyboardInterrupt):
        feats_mod.compute_features(data, ["fleurs/de/dev"])
    out = fbank_dir(data, "fleurs", "de", "dev")
    assert not (out / "features.json").exists() and not (out / "cuts.jsonl.gz").exists()
    assert not (out / "feats").exists() and not list(out.glob(".feats.tmp*"))
    monkeypatch.undo()
    rep = feats_mod.compute_features(data, ["fleurs/de/dev"])
    assert rep.datasets[0].status == "computed" and (out / "features.json").is_file()
