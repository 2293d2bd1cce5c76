"""`mlma prepare` on miniature corpora in their real layouts (real espeak-ng speech)."""
from __future__ import annotations

import pytest
import soundfile as sf
from lhotse import CutSet, RecordingSet, SupervisionSet
from typer.testing import CliRunner

import corpus_fixtures as cf
from mlma_cli.cli.main import app
from mlma_cli.data.bad_items import read_bad_items
from mlma_cli.data.corpora import prepare_corpus
from mlma_cli.data.layout import manifest_dir

pytestmark = pytest.mark.skipif(not cf.have_espeak(), reason="espeak-ng not installed")


def _load(data, corpus, lang, split):
    d = manifest_dir(data, corpus, lang, split)
    return (
        RecordingSet.from_file(d / "recordings.jsonl.gz").to_eager(),
        SupervisionSet.from_file(d / "supervisions.jsonl.gz").to_eager(),
        CutSet.from_file(d / "cuts.jsonl.gz").to_eager(),
    )


def test_librispeech_layout(tmp_path):
    root = cf.make_librispeech(tmp_path / "ls", {"dev-clean": 2, "train-clean-100": 3})
    rep = prepare_corpus("librispeech", root, tmp_path / "data")
    assert {(r.lang, r.split, r.utterances) for r in rep.rows} == {("en", "dev-clean", 2), ("en", "train-clean-100", 3)}
    recs, sups, cuts = _load(tmp_path / "data", "librispeech", "en", "dev-clean")
    s = sups["103-1240-0001"]
    assert s.text == "GOOD MORNING TO YOU" and s.language == "en" and s.speaker == "103"
    flac = root / "LibriSpeech/dev-clean/103/1240/103-1240-0001.flac"
    assert recs["103-1240-0001"].duration == pytest.approx(sf.info(str(flac)).duration)
    assert recs["103-1240-0001"].sampling_rate == 16000 and len(cuts) == 2
    assert rep.num_bad == 0 and read_bad_items(rep.bad_items_path) == []
    # the corpus dir may also be given as the LibriSpeech directory itself, and --splits selects parts
    rep2 = prepare_corpus("librispeech", root / "LibriSpeech", tmp_path / "d2", splits=["dev-clean"])
    assert [r.split for r in rep2.rows] == ["dev-clean"]


def test_commonvoice_two_languages(tmp_path):
    root = cf.make_commonvoice(tmp_path / "cv", ("de", "fr"), per_split=2)
    rep = prepare_corpus("commonvoice", root, tmp_path / "data", num_jobs=2)
    assert sorted((r.lang, r.split) for r in rep.rows) == sorted(
        (l, s) for l in ("de", "fr") for s in ("train", "dev", "test")
    )
    recs, sups, _ = _load(tmp_path / "data", "commonvoice", "fr", "train")
    assert {s.language for s in sups} == {"fr"}
    rec = recs["common_voice_fr_0000"]
    assert rec.sampling_rate == 48000 and 0.5 < rec.duration < 3.0
    assert sups["common_voice_fr_0000"].text == "Bonjour à tous." and sups["common_voice_fr_0000"].speaker == "a1b2c3"
    # --langs restricts, and the other language's rows stay in place
    rep_de = prepare_corpus("commonvoice", root, tmp_path / "data", langs=["de"], splits=["dev"])
    assert [(r.lang, r.split) for r in rep_de.rows] == [("de", "dev")]


def test_fleurs_hf_layout_maps_codes(tmp_path):
    root = cf.make_fleurs(tmp_path / "fleurs", ("de", "es"), per_split=2)
    rep = prepare_corpus("fleurs", root, tmp_path / "data")
    assert sorted({r.lang for r in rep.rows}) == ["de", "es"] and rep.utterances == 12
    _, sups, _ = _load(tmp_path / "data", "fleurs", "es", "test")
    s = next(iter(sups))
    assert s.language == "es" and s.text[0].isupper() and s.custom["transcription"] == s.text.lower()
    assert s.gender == "FEMALE"


def test_fleurs_lhotse_download_layout(tmp_path):
    """lhotse's download_fleurs layout: <code>/<split>/*.wav with the tsv files under metadata/<code>/."""
    root = cf.make_fleurs(tmp_path / "fleurs", ("nl", "it"), per_split=2, layout="lhotse")
    assert not (root / "nl_nl" / "test.tsv").exists() and (root / "metadata" / "nl_nl" / "test.tsv").is_file()
    rep = prepare_corpus("fleurs", root, tmp_path / "data", langs=["nl", "it"], splits=["dev", "test"])
    assert sorted((r.lang, r.split) for r in rep.rows) == [("it", "dev"), ("it", "test"), ("nl", "dev"), ("nl", "test")]
    assert rep.utterances == 8 and rep.num_bad == 0
    recs, sups, _ = _load(tmp_path / "data", "fleurs", "nl", "test")
    s = next(iter(sups))
    assert s.language == "nl" and s.text[0].isupper() and s.gender == "FEMALE"
    assert all(r.sources[0].source.startswith(str(root / "nl_nl" / "test")) for r in recs)


def test_mls_and_voxpopuli(tmp_path):
    cf.make_mls(tmp_path / "mls", "de", per_split=1, opus=True)
    rep = prepare_corpus("mls", tmp_path / "mls", tmp_path / "data")
    assert rep.utterances == 3 and {r.lang for r in rep.rows} == {"de"}
    recs, sups, _ = _load(tmp_path / "data", "mls", "de", "train")
    assert next(iter(sups)).speaker == "100" and next(iter(recs)).sampling_rate == 48000
    cf.make_voxpopuli(tmp_path / "vp", "nl", per_split=1)
    rep = prepare_corpus("voxpopuli", tmp_path / "vp", tmp_path / "data", langs=["nl"])
    assert rep.utterances == 3
    _, sups, _ = _load(tmp_path / "data", "voxpopuli", "nl", "dev")
    assert next(iter(sups)).language == "nl" and next(iter(sups)).custom["raw_text"].endswith(".")


def test_cli_prepare_prints_table(tmp_path):
    root = cf.make_fleurs(tmp_path / "fleurs", ("nl",), per_split=1)
    res = CliRunner().invoke(app, ["prepare", "fleurs", str(root), "--data-dir", str(tmp_path / "data"), "--langs", "nl"])
    assert res.exit_code == 0, res.output
    for word in ("fleurs", "nl", "train", "utterances", "hours", "skipped", "total"):
        assert word in res.output
    assert (manifest_dir(tmp_path / "data", "fleurs", "nl", "test") / "cuts.jsonl.gz").is_file()


def test_cli_prepare_synthetic(tmp_path):
    res = CliRunner().invoke(
        app,
        ["prepare", "synthetic", "--data-dir", str(tmp_path / "data"), "--langs", "it",
         "--train-utts", "2", "--dev-utts", "1", "--test-utts", "1", "--seed", "3"],
    )
    assert res.exit_code == 0, res.output
    assert "synthetic" in res.output and "it" in res.output
    _, sups, _ = _load(tmp_path / "data", "synthetic", "it", "train")
    assert len(sups) == 2 and {s.language for s in sups} == {"it"}
