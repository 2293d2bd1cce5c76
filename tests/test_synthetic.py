"""The built-in synthetic corpus: open-vocabulary text and held-out words, sentence grammars, espeak-ng synthesis
and augmentation, manifests, layout helpers."""
import builtins
import json
import re
from pathlib import Path

import numpy as np

import pytest
import soundfile as sf
from lhotse import load_manifest
from lhotse.qa import validate

from mlma_cli.data import layout, open_text, synthetic
from mlma_cli.data.sentences import iter_sentences, load_grammar, split_sentences
from mlma_cli.data.synthetic import prepare_synthetic
from mlma_cli.errors import MlmaError
from mlma_cli.text import LANGUAGES, normalize

SMALL = {"train": 6, "dev": 3, "test": 3}


def _cuts(data, lang, split):
    return load_manifest(layout.manifest_dir(data, "synthetic", lang, split) / "cuts.jsonl.gz")


def _summary(data, langs, splits=SMALL):
    out = {}
    for lang in langs:
        for split in splits:
            for cut in _cuts(data, lang, split):
                sup = cut.supervisions[0]
                out[cut.id] = (sup.text, sup.speaker, sup.custom["speed"], sup.custom["pitch"], cut.num_samples)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data = tmp_path_factory.mktemp("syn")
    report = prepare_synthetic(data, languages=("de", "fr"), utts_per_split=SMALL, seed=3, num_jobs=2)
    return data, report


# ------------------------------------------------------------------------------------------------ open vocabulary

RECIPE = {"train": 1500, "dev": 60, "test": 200}  # egs/mini/run.sh's default sizes


@pytest.mark.parametrize("lang", LANGUAGES)
def test_open_vocabulary_has_thousands_of_words_and_held_out_words(lang):
    vocab = open_text.load_vocabulary(lang)
    assert len(vocab.words) == open_text.VOCAB_SIZE == len(set(vocab.words)) == len(vocab.weights)
    assert all(normalize(w, lang) == w and set(w) <= set(open_text.ALPHABETS[lang]) for w in vocab.words)
    assert 0.15 * len(vocab.words) < len(vocab.held_out) < 0.25 * len(vocab.words)
    assert not vocab.held_out & set(vocab.words[:open_text.HELD_OUT_MIN_RANK]), "function words stay in training"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_open_splits_hold_out_sentences_and_words(lang):
    vocab = open_text.load_vocabulary(lang)
    splits = open_text.split_sentences(lang, RECIPE, seed=0)
    norm = {k: [normalize(s, lang) for s in v] for k, v in splits.items()}
    assert {k: len(set(v)) for k, v in norm.items()} == RECIPE  # distinct within each split
    assert not set(norm["train"]) & set(norm["test"]) and not set(norm["train"]) & set(norm["dev"])
    train_words = {w for s in norm["train"] for w in s.split()}
    assert len(train_words) > 4000, "thousands of distinct training words"
    assert not train_words & vocab.held_out
    stats = open_text.oov_stats(lang, splits)
    assert stats["test"]["oov_rate"] >= 20.0, stats["test"]
    # even-index test sentences use training-text words only, odd ones have a held-out word each
    for i, s in enumerate(norm["test"]):
        words = s.split()
        assert (i % 2 == 1) == any(w in vocab.held_out for w in words), s
        if i % 2 == 0:
            assert set(words) <= train_words, s
    lengths = [len(s.split()) for s in norm["train"]]
    assert min(lengths) >= open_text.MIN_WORDS and max(lengths) <= open_text.MAX_WORDS


def test_open_splits_deterministic_for_seed():
    a = open_text.split_sentences("it", {"train": 50, "test": 10}, seed=1)
    assert a == open_text.split_sentences("it", {"train": 50, "test": 10}, seed=1)
    assert a != open_text.split_sentences("it", {"train": 50, "test": 10}, seed=2)
    assert open_text.load_vocabulary("it", 1).held_out != open_text.load_vocabulary("it", 2).held_out


def test_oov_stats_counts_tokens_outside_training_text():
    stats = open_text.oov_stats("en", {"train": ["The cat sleeps."], "test": ["The dog sleeps.", "A cat."]})
    assert stats["test"] == {"sentences": 2, "tokens": 5, "types": 5, "oov_tokens": 2, "oov_rate": 40.0,
                             "oov_types": 2, "sentences_with_oov": 2}
    assert stats["train"] == {"sentences": 1, "tokens": 3, "types": 3}


def test_missing_wordfreq_is_one_line_error(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_wordfreq(name, *args, **kwargs):
        if name == "wordfreq":
            raise ImportError("No module named 'wordfreq'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wordfreq)
    open_text.load_vocabulary.cache_clear()
    try:
        with pytest.raises(MlmaError, match=r"mlma\[corpus\].*--text grammar") as err:
            prepare_synthetic(tmp_path, languages=("nl",), utts_per_split={"train": 1})
        assert "\n" not in str(err.value)
        assert not (tmp_path / "audio").exists(), "fails before synthesizing anything"
    finally:
        open_text.load_vocabulary.cache_clear()


# ------------------------------------------------------------------------------------------------ augmentation


def test_augment_pads_silence_sets_level_and_adds_noise():
    x = (0.5 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    aug = {"lead": 1.0, "trail": 0.25, "peak_db": -30.0, "speed_factor": 1.0, "t60": 0.0, "snr_db": 20.0,
           "pink": 1.0, "seed": 7}
    y = synthetic.augment(x, aug)
    assert y.dtype == np.float32 and y.size == 16000 + 16000 + 4000
    assert abs(20 * np.log10(np.abs(y).max()) + 30.0) < 0.1, "peak at -30 dBFS: a quiet recording"
    lead_rms, speech_rms = np.sqrt(np.mean(y[:16000] ** 2)), np.sqrt(np.mean(y[16000:32000] ** 2))
    assert 0 < lead_rms < speech_rms / 5, "the leading silence carries the noise floor only"
    assert np.array_equal(y, synthetic.augment(x, aug)), "deterministic for its seed"
    clean = synthetic.augment(x, {**aug, "snr_db": 0.0})
    assert not clean[:16000].any()
    faster = synthetic.augment(x, {**aug, "speed_factor": 1.1, "lead": 0.0, "trail": 0.0})
    assert abs(faster.size - 16000 / 1.1) < 50
    wet = synthetic.augment(x, {**aug, "t60": 0.4, "lead": 0.0, "trail": 0.0, "snr_db": 0.0})
    assert wet.size > 16000 and not np.allclose(wet[:16000] / np.abs(wet).max(), x / np.abs(x).max(), atol=1e-2)


def test_room_impulse_response_has_the_drawn_direct_to_reverberant_ratio():
    for t60, drr in ((0.15, 0.0), (0.6, 12.0), (0.3, 6.5)):
        rir = synthetic.room_impulse_response(t60, drr, np.random.default_rng(3))
        assert rir.size == int(t60 * 16000) and rir[0] == 1.0
        assert abs(10 * np.log10(1.0 / np.sum(rir[1:] ** 2)) - drr) < 1e-6
        late = np.sum(rir[int(0.5 * rir.size):] ** 2) / np.sum(rir[1:] ** 2)
        assert late < 0.05, "the tail decays (-60 dB over t60)"


def test_augmentation_draws_vary():
    import random

    draws = [synthetic.draw_augmentation(random.Random(i)) for i in range(400)]
    assert min(d["peak_db"] for d in draws) < -30 and max(d["peak_db"] for d in draws) > -5
    padded = [d["lead"] for d in draws if d["lead"] > 0]
    assert max(padded) > 0.6 and min(padded) < 0.1
    assert abs(len(padded) / 400 - synthetic.P_PADDED) < 0.08 and all(d["trail"] > 0 for d in draws if d["lead"] > 0)
    assert abs(sum(d["t60"] > 0 for d in draws) / 400 - synthetic.P_REVERB) < 0.08
    noisy = [d["snr_db"] <= synthetic.SNR_DB[1] for d in draws]
    assert abs(sum(noisy) / 400 - synthetic.P_NOISE) < 0.08
    floor = [d["snr_db"] for d, n in zip(draws, noisy) if not n]
    assert floor and all(synthetic.FLOOR_SNR_DB[0] <= f <= synthetic.FLOOR_SNR_DB[1] for f in floor), \
        "every other utterance gets a faint noise floor, never digital silence"
    assert abs(sum(d["speed_factor"] != 1.0 for d in draws) / 400 - synthetic.P_SPEED) < 0.08
    drr = [d["drr_db"] for d in draws]
    assert synthetic.DRR_DB[0] <= min(drr) < 2 and 10 < max(drr) <= synthetic.DRR_DB[1]


def test_all_voice_variants_are_used():
    variants = synthetic.voice_variants()
    assert len(variants) > 50 and {"m1", "f3"} <= set(variants)
    voices = synthetic.available_voices("es", variants=variants)
    assert len(voices) > 50 and all(v.startswith("es+") for v in voices)


# ------------------------------------------------------------------------------------------------ grammar


@pytest.mark.parametrize("lang", LANGUAGES)
def test_grammar_yields_thousands_of_sentences_with_bounded_vocabulary(lang):
    grammar = load_grammar(lang)
    assert 80 <= len(grammar.words()) <= 400
    sentences = list(zip(range(3000), iter_sentences(lang, seed=0)))
    assert len({normalize(s, lang) for _, s in sentences}) == 3000
    lengths = [len(normalize(s, lang).split()) for _, s in sentences]
    assert min(lengths) >= 2 and max(lengths) <= 10
    words = {w for _, s in sentences for w in normalize(s, lang).split()}
    assert words <= grammar.words()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_default_splits_disjoint_and_test_words_seen_in_train(lang):
    splits = split_sentences(lang, synthetic.DEFAULT_UTTS, seed=0)
    norm = {k: {normalize(s, lang) for s in v} for k, v in splits.items()}
    assert {k: len(v) for k, v in norm.items()} == synthetic.DEFAULT_UTTS
    assert not norm["train"] & norm["dev"] and not norm["train"] & norm["test"] and not norm["dev"] & norm["test"]
    train_words = {w for s in norm["train"] for w in s.split()}
    test_words = [w for s in norm["test"] for w in s.split()]
    assert sum(w in train_words for w in test_words) / len(test_words) >= 0.99


def test_sentences_deterministic_for_seed():
    a = split_sentences("es", {"train": 50, "test": 10}, seed=1)
    assert a == split_sentences("es", {"train": 50, "test": 10}, seed=1)
    assert a != split_sentences("es", {"train": 50, "test": 10}, seed=2)


@pytest.mark.parametrize("lang", ["fr", "es", "it"])
def test_adjectives_agree_with_subject_gender(lang):
    grammar = load_grammar(lang)
    gendered = [a.split("/") for a, _ in grammar.slots["adj"] if a.split("/")[0] != a.split("/")[1]]
    checked = 0
    for _, sentence in zip(range(4000), iter_sentences(lang, seed=0)):
        for subject, gender in grammar.slots["subject"]:
            if not sentence.lower().startswith(subject.lower() + " "):
                continue
            for male, female in gendered:
                wrong = male if gender == "f" else female
                right = female if gender == "f" else male
                if re.search(rf"\b{re.escape(wrong)}\b", sentence) and not re.search(rf"\b{re.escape(right)}\b", sentence):
                    pytest.fail(f"{sentence!r}: {subject} ({gender}) with {wrong}")
                checked += 1
    assert checked > 100


# ------------------------------------------------------------------------------------------------ synthesis


def test_tiny_corpus_layout_and_manifests(tiny):
    data, report = tiny
    rows = [(r.lang, r.split, r.utterances, r.failed) for r in report.rows if r.split != synthetic.OOV_SPLIT]
    assert rows == [(lang, split, n, 0) for lang in ("de", "fr") for split, n in SMALL.items()]
    assert report.utterances == 24 and report.hours > 0
    for lang in ("de", "fr"):
        for split in SMALL:
            mdir = layout.manifest_dir(data, "synthetic", lang, split)
            assert layout.manifests_exist(mdir)
            assert not list(mdir.glob(".*tmp*")), "temporary files left behind"
            cuts = _cuts(data, lang, split)
            validate(cuts, read_data=True)
            for cut in cuts:
                sup = cut.supervisions[0]
                assert sup.language == lang and sup.text and sup.speaker.startswith(synthetic.BASE_VOICE[lang] + "+")
                assert cut.sampling_rate == 16000 and 0.5 < cut.duration < 12.0
                assert {"lead", "trail", "peak_db", "snr_db", "t60"} <= set(sup.custom)
                path = Path(cut.recording.sources[0].source)
                assert path.parent == layout.audio_dir(data, "synthetic", lang, split).resolve()
                info = sf.info(str(path))
                assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
                assert info.frames == cut.num_samples
    assert (data / "manifests" / "synthetic" / "bad_items.tsv").read_text() == "id\tfile\treason\tlang\tsplit\n"
    table = report.to_table()
    assert table.row_count == len(report.rows) + 1


def test_tiny_corpus_oov_report_and_held_out_word_subset(tiny):
    data, report = tiny
    for lang in ("de", "fr"):
        stats = json.loads((data / "manifests" / "synthetic" / lang / "oov.json").read_text())
        train_words = {w for c in _cuts(data, lang, "train") for w in normalize(c.supervisions[0].text, lang).split()}
        test = {c.supervisions[0].id: normalize(c.supervisions[0].text, lang).split() for c in _cuts(data, lang, "test")}
        tokens = [w for ws in test.values() for w in ws]
        oov = sum(w not in train_words for w in tokens)
        assert stats["test"]["oov_tokens"] == oov and stats["test"]["tokens"] == len(tokens)
        subset = {c.supervisions[0].id for c in _cuts(data, lang, synthetic.OOV_SPLIT)}
        assert subset == {i for i, ws in test.items() if any(w not in train_words for w in ws)}
        assert subset and len(subset) < len(test)
        row = [r for r in report.rows if (r.lang, r.split) == (lang, "test")][0]
        assert row.oov_rate == stats["test"]["oov_rate"]
        assert stats["source"]["text"] == "wordfreq" and stats["source"]["vocabulary_size"] == open_text.VOCAB_SIZE


def test_tiny_corpus_splits_do_not_overlap(tiny):
    data, _ = tiny
    for lang in ("de", "fr"):
        texts = {s: {normalize(c.supervisions[0].text, lang) for c in _cuts(data, lang, s)} for s in SMALL}
        assert len(texts["train"]) == SMALL["train"]
        assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
        assert not texts["dev"] & texts["test"]


def test_synthesis_deterministic_for_seed(tiny, tmp_path):
    data, _ = tiny
    again = prepare_synthetic(tmp_path / "again", languages=("de", "fr"), utts_per_split=SMALL, seed=3, num_jobs=1)
    assert again.utterances == 24
    first, second = _summary(data, ("de", "fr")), _summary(tmp_path / "again", ("de", "fr"))
    assert first == second
    voices = {v[1] for v in first.values()}
    assert len(voices) >= 3, "several voice variants expected"
    other = prepare_synthetic(tmp_path / "other", languages=("de",), utts_per_split={"train": 6}, seed=4)
    assert other.utterances == 6
    texts = [v[0] for k, v in _summary(tmp_path / "other", ("de",), {"train": 6}).items()]
    assert texts != [v[0] for k, v in first.items() if k.startswith("synthetic-de-train")]


def test_all_six_languages_two_utterances_each(tmp_path):
    report = prepare_synthetic(tmp_path, utts_per_split={"train": 2, "dev": 2, "test": 2}, num_jobs=2)
    assert {(r.lang, r.split): r.utterances for r in report.rows if r.split != synthetic.OOV_SPLIT} == {
        (lang, split): 2 for lang in LANGUAGES for split in ("train", "dev", "test")}
    assert layout.find_datasets(tmp_path, "synthetic/*/train") == [f"synthetic/{lang}/train" for lang in sorted(LANGUAGES)]


def test_minutes_per_lang_sizes_train_by_duration(tmp_path):
    report = prepare_synthetic(tmp_path, languages=("it",), utts_per_split={"train": 0, "dev": 1, "test": 1},
                               minutes_per_lang=0.2)
    train = [r for r in report.rows if r.split == "train"][0]
    durations = [c.duration for c in _cuts(tmp_path, "it", "train")]
    assert train.seconds >= 12.0 and sum(durations[:-1]) < 12.0
    assert train.utterances == len(durations)
    wavs = list(layout.audio_dir(tmp_path, "synthetic", "it", "train").glob("*.wav"))
    assert len(wavs) == len(durations), "audio synthesized past the target must be removed"


def test_failed_synthesis_is_skipped_and_reported(tmp_path, monkeypatch):
    real = synthetic.synthesize

    def flaky(exe, text, voice, speed, pitch):
        if "Hund" in text:
            raise RuntimeError("simulated espeak-ng crash")
        return real(exe, text, voice, speed, pitch)

    monkeypatch.setattr(synthetic, "synthesize", flaky)
    report = prepare_synthetic(tmp_path, languages=("de",), utts_per_split={"train": 20}, text="grammar")
    sentences = split_sentences("de", {"train": 20}, seed=0)["train"]
    n_bad = sum("Hund" in s for s in sentences)
    assert n_bad > 0
    assert report.rows[0].failed == n_bad == len(report.failures)
    assert report.rows[0].utterances == 20 - n_bad
    assert all("Hund" not in c.supervisions[0].text for c in _cuts(tmp_path, "de", "train"))
    bad = (tmp_path / "manifests" / "synthetic" / "bad_items.tsv").read_text().splitlines()
    assert len(bad) == 1 + n_bad and "simulated espeak-ng crash" in bad[1] and bad[1].endswith("\tde\ttrain")


def test_all_failed_raises(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("no audio")

    monkeypatch.setattr(synthetic, "synthesize", broken)
    with pytest.raises(MlmaError, match="bad_items.tsv"):
        prepare_synthetic(tmp_path, languages=("en",), utts_per_split={"train": 2})


def test_missing_espeak_names_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic.shutil, "which", lambda name: None)
    with pytest.raises(MlmaError, match="apt-get install espeak-ng"):
        prepare_synthetic(tmp_path, languages=("en",), utts_per_split={"train": 1})


def test_bad_arguments(tmp_path):
    with pytest.raises(MlmaError, match="'pt'"):
        prepare_synthetic(tmp_path, languages=("pt",))
    with pytest.raises(MlmaError):
        prepare_synthetic(tmp_path, languages=("en",), utts_per_split={"train": -1})
    with pytest.raises(MlmaError):
        prepare_synthetic(tmp_path, languages=("en",), minutes_per_lang=0)
    with pytest.raises(MlmaError, match=r"words \| grammar"):
        prepare_synthetic(tmp_path, languages=("en",), text="novels")


def test_grammar_text_without_augmentation_keeps_the_closed_corpus(tmp_path):
    report = prepare_synthetic(tmp_path, languages=("en",), utts_per_split={"train": 4, "test": 2},
                               text="grammar", augment_audio=False)
    assert [r.split for r in report.rows] == ["train", "test"], "no test_oov subset: every test word is seen"
    words = load_grammar("en").words()
    for split in ("train", "test"):
        for cut in _cuts(tmp_path, "en", split):
            assert set(normalize(cut.supervisions[0].text, "en").split()) <= words
            assert "lead" not in cut.supervisions[0].custom and cut.duration < 6.0
    assert not (tmp_path / "manifests" / "synthetic" / "en" / "oov.json").exists()


# ------------------------------------------------------------------------------------------------ layout


def test_layout_paths_and_parse_dataset(tmp_path):
    assert layout.parse_dataset("synthetic/de/train") == ("synthetic", "de", "train")
    assert layout.parse_dataset("librispeech/en/test-clean/") == ("librispeech", "en", "test-clean")
    for bad in ("synthetic/de", "a/b/c/d", "synthetic//train", "synthetic/xx/train"):
        with pytest.raises(MlmaError):
            layout.parse_dataset(bad)
    assert layout.manifest_dir(tmp_path, "fleurs", "nl", "test") == tmp_path / "manifests/fleurs/nl/test"
    assert layout.fbank_dir("data", "commonvoice", "fr", "dev") == Path("data/fbank/commonvoice/fr/dev")
    assert layout.dataset_name("a", "en", "b") == "a/en/b"


def test_write_manifests_validates_and_is_atomic(tmp_path):
    from lhotse import AudioSource, Recording, SupervisionSegment

    rec = Recording(id="r1", sources=[AudioSource(type="file", channels=[0], source="/x.wav")],
                    sampling_rate=16000, num_samples=16000, duration=1.0)
    good = SupervisionSegment(id="r1", recording_id="r1", start=0, duration=1.0, text="a", language="en")
    cuts = layout.write_manifests([rec], [good], tmp_path / "ok")
    assert len(cuts) == 1 and layout.manifests_exist(tmp_path / "ok")
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == sorted(layout.MANIFEST_FILES)
    orphan = SupervisionSegment(id="s2", recording_id="missing", start=0, duration=1.0, text="b")
    with pytest.raises(MlmaError, match="bad"):
        layout.write_manifests([rec], [good, orphan], tmp_path / "bad")
    assert not (tmp_path / "bad" / "cuts.jsonl.gz").exists()
