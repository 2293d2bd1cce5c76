"""SentencePiece tokenizer: training from cut manifests, blank 0, round trips, language tags, balancing, CLI."""
from collections import Counter
from pathlib import Path

import pytest
from lhotse import AudioSource, Recording, SupervisionSegment
from typer.testing import CliRunner

from mlma_cli.data import layout
from mlma_cli.data.sentences import split_sentences
from mlma_cli.data.tokenizer import Tokenizer, balance_sentences, read_training_text, resolve_cut_paths, train_tokenizer
from mlma_cli.errors import MlmaError
from mlma_cli.text import LANGUAGES, normalize

HARD = {
    "en": ["Don't panic, it's naïve!"],
    "de": ["Die STRAẞE: Grüße aus Köln."],
    "fr": ["L' homme d'aujourd'hui, ma sœur ! Ça va ?"],
    "es": ["¿Dónde está el pingüino? ¡Año!"],
    "it": ["Dell'acqua, un po' di più. Città!"],
    "nl": ["'s Avonds in het Ĳsselmeer, coördinator."],
}


def write_text_manifest(data: Path, lang: str, split: str, texts, language="same") -> Path:
    """Cut manifests whose supervisions carry ``texts`` (audio is never read by the tokenizer)."""
    recs, sups = [], []
    for i, text in enumerate(texts):
        rid = f"{lang}-{split}-{i}"
        recs.append(Recording(id=rid, sources=[AudioSource(type="file", channels=[0], source=f"/none/{rid}.wav")],
                              sampling_rate=16000, num_samples=16000, duration=1.0))
        sups.append(SupervisionSegment(id=rid, recording_id=rid, start=0, duration=1.0, text=text,
                                       language=lang if language == "same" else language))
    out = layout.manifest_dir(data, "textonly", lang, split)
    layout.write_manifests(recs, sups, out)
    return out / "cuts.jsonl.gz"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    data = tmp_path_factory.mktemp("tokdata")
    texts = {}
    for lang in LANGUAGES:
        texts[lang] = split_sentences(lang, {"train": 150}, seed=0)["train"] + HARD[lang]
        write_text_manifest(data, lang, "train", texts[lang])
    return data, texts


@pytest.fixture(scope="module")
def unigram_tagged(corpus, tmp_path_factory):
    data, _ = corpus
    out = tmp_path_factory.mktemp("uni")
    paths = resolve_cut_paths(data=data, datasets=["textonly/*/train"])
    report = train_tokenizer(paths, out, vocab_size=300, model_type="unigram", lang_tags=True)
    return out, report


def test_files_and_special_ids(unigram_tagged):
    out, report = unigram_tagged
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer.model", "tokenizer.vocab", "tokens.txt"]
    tok = Tokenizer.load(out / "tokenizer.model")
    assert tok.blank_id == 0 and tok.id_to_piece(0) == "<blk>" and tok.id_to_piece(1) == "<unk>"
    assert tok.sp.bos_id() == -1 and tok.sp.eos_id() == -1
    assert tok.vocab_size == report.vocab_size and 100 < tok.vocab_size <= 300
    lines = (out / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == tok.vocab_size
    assert lines[0] == "<blk> 0" and all(line.split(" ") == [tok.id_to_piece(i), str(i)] for i, line in enumerate(lines))
    assert report.used == {lang: 151 for lang in LANGUAGES}


def test_round_trip_equals_normalized_text(corpus, unigram_tagged):
    _, texts = corpus
    tok = Tokenizer.load(unigram_tagged[0] / "tokenizer.model")
    for lang, sentences in texts.items():
        for text in sentences:
            ids = tok.encode(text, lang)
            assert 1 not in ids, f"unknown piece in {text!r}"
            assert tok.decode(ids) == normalize(text, lang)


def test_language_tags(unigram_tagged):
    tok = Tokenizer.load(unigram_tagged[0] / "tokenizer.model")
    assert tok.lang_tags
    assert [tok.id_to_piece(tok.tag_id(lang)) for lang in LANGUAGES] == [f"<{lang}>" for lang in LANGUAGES]
    ids = tok.encode("Der Hund schläft.", "de")
    assert ids[0] == tok.tag_id("de") and tok.lang_of(ids) == "de"
    assert tok.decode(ids) == "der hund schläft"
    assert tok.decode([0, 0] + ids + [0]) == "der hund schläft"
    assert tok.lang_of(tok.encode("Der Hund schläft.")) is None  # no language given: no tag
    assert tok.decode(tok.encode("Der Hund schläft.")) == "der hund schläft"
    assert tok.lang_of([]) is None and tok.decode([]) == ""


def test_bytes_round_trip(unigram_tagged):
    tok = Tokenizer.load(unigram_tagged[0] / "tokenizer.model")
    again = Tokenizer.from_bytes(tok.to_bytes())
    assert again.vocab_size == tok.vocab_size and again.lang_tags
    assert again.encode("il cane dorme", "it") == tok.encode("il cane dorme", "it")


def test_same_text_and_options_give_a_byte_identical_model(corpus, tmp_path):
    """Recipe stage checksums and the training resume check compare tokenizer bytes: a retraining on the same
    text must not differ (SentencePiece itself records the temporary paths it trained in)."""
    data, _ = corpus
    paths = resolve_cut_paths(cuts=[layout.manifest_dir(data, "textonly", lang, "train") for lang in LANGUAGES])
    for name in ("a", "b"):
        train_tokenizer(paths, tmp_path / name, vocab_size=120, model_type="unigram", lang_tags=True)
    first, second = ((tmp_path / n / "tokenizer.model").read_bytes() for n in ("a", "b"))
    assert first == second
    assert Tokenizer.from_bytes(first).encode("il cane dorme", "it")


def test_untagged_bpe_and_char(corpus, tmp_path):
    data, texts = corpus
    paths = resolve_cut_paths(cuts=[layout.manifest_dir(data, "textonly", lang, "train") for lang in LANGUAGES])
    train_tokenizer(paths, tmp_path / "bpe", vocab_size=200, model_type="bpe")
    bpe = Tokenizer.load(tmp_path / "bpe" / "tokenizer.model")
    assert not bpe.lang_tags and bpe.blank_id == 0
    ids = bpe.encode("Où est le chien ?", "fr")
    assert bpe.lang_of(ids) is None and bpe.decode(ids) == "où est le chien"

    report = train_tokenizer(paths, tmp_path / "char", vocab_size=10, model_type="char", lang_tags=True)
    char = Tokenizer.load(tmp_path / "char" / "tokenizer.model")
    pieces = char.pieces()
    assert pieces[:2] == ["<blk>", "<unk>"] and char.lang_tags
    assert all(len(p) == 1 for p in pieces[8:]), pieces
    alphabet = {ch for lang, sents in texts.items() for s in sents for ch in normalize(s, lang).replace(" ", "")}
    assert alphabet <= set(pieces) and {"ß", "œ", "ñ", "ï", "ö"} <= set(pieces)
    assert report.vocab_size == len(pieces)
    for lang, sents in texts.items():
        for s in sents[-3:]:
            assert char.decode(char.encode(s, lang)) == normalize(s, lang)


def test_balance_sentences_on_skewed_input():
    skewed = {"en": [f"e{i}" for i in range(1000)], "de": [f"d{i}" for i in range(10)],
              "fr": [f"f{i}" for i in range(100)]}
    equal = balance_sentences(skewed, alpha=0.0)
    assert {k: len(v) for k, v in equal.items()} == {"de": 370, "en": 370, "fr": 370}
    assert set(equal["de"]) == set(skewed["de"]) and max(Counter(equal["de"]).values()) == 37  # up-sampled evenly
    assert len(set(equal["en"])) == 370  # sub-sampled without replacement
    natural = balance_sentences(skewed, alpha=1.0)
    assert {k: len(v) for k, v in natural.items()} == {"de": 10, "en": 1000, "fr": 100}
    half = {k: len(v) for k, v in balance_sentences(skewed, alpha=0.5).items()}
    assert half["en"] / half["de"] == pytest.approx(10, rel=0.02)
    capped = balance_sentences(skewed, alpha=0.0, max_sentences=30)
    assert {k: len(v) for k, v in capped.items()} == {"de": 10, "en": 10, "fr": 10}
    assert balance_sentences(skewed, 0.3, seed=5) == balance_sentences(skewed, 0.3, seed=5)
    assert balance_sentences(skewed, 0.3, seed=5) != balance_sentences(skewed, 0.3, seed=6)
    with pytest.raises(ValueError):
        balance_sentences(skewed, alpha=2.0)


def test_training_is_balanced(tmp_path):
    write_text_manifest(tmp_path, "en", "train", split_sentences("en", {"train": 300}, seed=0)["train"])
    write_text_manifest(tmp_path, "nl", "train", split_sentences("nl", {"train": 20}, seed=0)["train"])
    paths = resolve_cut_paths(data=tmp_path, datasets=["textonly/*/train"])
    report = train_tokenizer(paths, tmp_path / "lang", vocab_size=120)
    assert report.sentences == {"en": 300, "nl": 20} and report.used == {"en": 160, "nl": 160}
    tok = Tokenizer.load(tmp_path / "lang" / "tokenizer.model")
    nl_words = {w for s in split_sentences("nl", {"train": 20}, seed=0)["train"] for w in normalize(s, "nl").split()}
    assert any(f"▁{w}" in tok.pieces() for w in nl_words), "Dutch got no whole-word pieces despite balancing"


def test_user_errors(tmp_path):
    empty = write_text_manifest(tmp_path, "es", "train", ["¿?", "..."])
    with pytest.raises(MlmaError, match="no training text"):
        train_tokenizer([empty], tmp_path / "out")
    with pytest.raises(MlmaError, match="not found"):
        resolve_cut_paths(cuts=[tmp_path / "nothing"])
    with pytest.raises(MlmaError, match="no dataset matches"):
        resolve_cut_paths(data=tmp_path, datasets=["nope/*/train"])
    with pytest.raises(MlmaError):
        resolve_cut_paths()
    foreign = write_text_manifest(tmp_path, "en", "dev", ["hello"], language="pt")
    with pytest.raises(MlmaError, match="en-dev-0.*'pt'"):
        read_training_text([foreign])
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(MlmaError, match="junk.model"):
        Tokenizer.load(tmp_path / "junk.model")
    with pytest.raises(MlmaError, match="not found"):
        Tokenizer.load(tmp_path / "missing.model")
    assert not (tmp_path / "out" / "tokenizer.model").exists()


def test_foreign_sentencepiece_model_rejected(tmp_path):
    import sentencepiece as spm

    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 20 + "good morning\n" * 20)
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "plain"), vocab_size=20,
                                   hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(MlmaError, match="blank"):
        Tokenizer.load(tmp_path / "plain.model")


def test_cli(corpus, tmp_path):
    from mlma_cli.cli.main import app

    data, _ = corpus
    result = CliRunner().invoke(app, ["tokenizer", "--data-dir", str(data), "--dataset", "textonly/*/train",
                                      "--output-dir", str(tmp_path / "lang"), "--vocab-size", "150",
                                      "--model-type", "bpe", "--lang-tags"])
    assert result.exit_code == 0, result.output
    assert "nl" in result.output and (tmp_path / "lang" / "tokenizer.model").is_file()
    assert Tokenizer.load(tmp_path / "lang" / "tokenizer.model").lang_tags
    bad = CliRunner().invoke(app, ["tokenizer", "--cuts", str(tmp_path / "none"), "--output-dir", str(tmp_path / "x")])
    assert bad.exit_code != 0 and isinstance(bad.exception, MlmaError)
