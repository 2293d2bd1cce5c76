"""Table-driven tests of mlma_cli.text.normalize: one table per language plus cross-language properties."""
import pytest

from mlma_cli.text import LANGUAGES, normalize, normalize_generic

CASES = {
    "en": [
        ("Hello, World!", "hello world"),
        ("Don't stop.", "don't stop"),
        ("It\u2019s John\u2019s book.", "it's john's book"),  # typographic apostrophes
        ("\u2018quoted\u2019 and \u201cdouble\u201d", "quoted and double"),
        ("'Single quotes' around", "single quotes around"),
        ("The dogs' bone", "the dogs bone"),  # trailing apostrophe dropped
        ("rock 'n' roll", "rock n roll"),
        ("well-known  \t  mother-in-law", "well known mother in law"),
        ("A \u2014 B \u2013 C", "a b c"),  # em / en dash
        ("In 1999, 3.5% of 20\u00a0people", "in 1999 3 5 of 20 people"),  # nbsp, digits kept
        ("Na\u00efve caf\u00e9 r\u00e9sum\u00e9", "na\u00efve caf\u00e9 r\u00e9sum\u00e9"),
        ("cafe\u0301", "caf\u00e9"),  # decomposed -> NFC
        ("\ufb01ne \ufb02ow", "fine flow"),  # ligatures
        ("Ørsted's \u00c6sir", "\u00f8rsted's \u00e6sir"),
        ("e-mail: a@b.com", "e mail a b com"),
        ("x\u00b2 \uff21\uff22\uff23", "x2 abc"),  # superscript, full width
        ("soft\u00adhyphen zero\u200bwidth", "softhyphen zerowidth"),
        ("  lots   of\n\nspace  ", "lots of space"),
        ("...!?", ""),
        ("", ""),
        ("I'm 'here'", "i'm here"),
    ],
    "de": [
        ("Die Straße ist breit.", "die straße ist breit"),
        ("STRA\u1e9eE", "straße"),  # capital sharp s -> ß, never "ss"
        ("Gr\u00fc\u00dfe aus M\u00fcnchen!", "gr\u00fc\u00dfe aus m\u00fcnchen"),
        ("\u00c4pfel, \u00d6l und \u00dcbel", "\u00e4pfel \u00f6l und \u00fcbel"),
        ("\u201eGuten Tag\u201c, sagte er.", "guten tag sagte er"),  # German quotes
        ("\u00bbZitat\u00ab", "zitat"),
        ("Wie geht's?", "wie geht's"),
        ("E-Mail-Adresse", "e mail adresse"),
        ("Er kam um 10:30 Uhr.", "er kam um 10 30 uhr"),
        ("Fu\u00dfball-WM 2006", "fu\u00dfball wm 2006"),
        ("ma\u00dfe MASSE", "ma\u00dfe masse"),
        ("Ein Gru\u00df \u2013 und tsch\u00fcss", "ein gru\u00df und tsch\u00fcss"),
    ],
    "fr": [
        ("L'homme est là.", "l'homme est là"),
        ("L\u2019homme", "l'homme"),
        ("l' homme", "l'homme"),  # detached elision joined
        ("l 'homme", "l'homme"),
        ("Qu' il vienne", "qu'il vienne"),
        ("Jusqu' à demain", "jusqu'à demain"),
        ("Aujourd'hui, c'est l'été !", "aujourd'hui c'est l'été"),
        ("Est-ce que tu viens ?", "est ce que tu viens"),
        ("\u00ab Bonjour \u00bb, dit-il.", "bonjour dit il"),
        ("Ma s\u0153ur et No\u00ebl", "ma s\u0153ur et no\u00ebl"),
        ("\u00c7a va ? Tr\u00e8s bien\u2026", "\u00e7a va très bien"),
        ("PÂTE à l'ŒUF", "pâte à l'œuf"),
        ("Il a 3\u00a0ans", "il a 3 ans"),
        ("na\u00efve, ma\u00efs, No\u00ebl", "na\u00efve ma\u00efs no\u00ebl"),
        ("prends-le", "prends le"),
        ("d'accord ; s'il te plaît", "d'accord s'il te plaît"),
    ],
    "es": [
        ("¿Dónde está el niño?", "dónde está el niño"),
        ("¡Hola, señor!", "hola señor"),
        ("¿¡Qué!?", "qué"),
        ("El PINGÜINO come", "el pingüino come"),
        ("Mañana, ¿vienes?", "mañana vienes"),
        ("Canción del año 2020", "canción del año 2020"),
        ("«Así es», dijo.", "así es dijo"),
        ("La 1\u00aa vez", "la 1a vez"),  # ordinal indicator via NFKC
        ("Él -dijo- no", "él dijo no"),
        ("ÁRBOL Ñandú", "árbol ñandú"),
    ],
    "it": [
        ("Dell'acqua fresca", "dell'acqua fresca"),
        ("dell' acqua", "dell'acqua"),
        ("L'uccello canta.", "l'uccello canta"),
        ("Un po' di pane", "un po di pane"),  # truncation, not elision: stays separate
        ("Dov'\u00e8 il cane?", "dov'\u00e8 il cane"),
        ("C'\u00e8 un'amica", "c'\u00e8 un'amica"),
        ("quell' uomo", "quell'uomo"),
        ("Perch\u00e9 cos\u00ec? Citt\u00e0!", "perch\u00e9 cos\u00ec citt\u00e0"),
        ("\u00c8 vero", "\u00e8 vero"),
        ("Disse: 'ciao'", "disse ciao"),
        ("L\u2019Italia", "l'italia"),
        ("tre-quattro volte", "tre quattro volte"),
    ],
    "nl": [
        ("'s Avonds eten we.", "'s avonds eten we"),
        ("'t Is goed", "'t is goed"),
        ("Zo'n auto", "zo'n auto"),
        ("De auto's en foto's", "de auto's en foto's"),
        ("\u0132sselmeer en \u0133s", "ijsselmeer en ijs"),  # ij ligature
        ("IJsland", "ijsland"),
        ("Een co\u00f6rdinator, na\u00efef", "een co\u00f6rdinator na\u00efef"),
        ("Hij zei: 'nee'.", "hij zei nee"),
        ("Wat een mooi weer!", "wat een mooi weer"),
        ("Het kost \u20ac5,50", "het kost 5 50"),
        ("zee\u00ebn en ru\u00efne", "zee\u00ebn en ru\u00efne"),
    ],
}

ALL_CASES = [(lang, text, want) for lang, cases in CASES.items() for text, want in cases]


def test_every_language_has_a_table():
    assert set(CASES) == set(LANGUAGES)
    assert all(len(CASES[lang]) >= 10 for lang in LANGUAGES)


@pytest.mark.parametrize("lang,text,want", ALL_CASES)
def test_normalize_table(lang, text, want):
    assert normalize(text, lang) == want


@pytest.mark.parametrize("lang,text,want", ALL_CASES)
def test_normalize_is_idempotent(lang, text, want):
    once = normalize(text, lang)
    assert normalize(once, lang) == once


def test_output_alphabet():
    for lang, text, _ in ALL_CASES:
        out = normalize(text, lang)
        assert out == out.strip() and "  " not in out
        assert all(ch.isalnum() or ch in " '" for ch in out), (text, out)
        assert out == out.lower()


def test_elision_rules_are_language_specific():
    # English possessive plurals must not be glued to the next word; French/Italian elisions are.
    assert normalize("the dogs' bone", "en") == "the dogs bone"
    assert normalize("l' homme", "fr") == "l'homme"
    assert normalize("l' homme", "en") == "l homme"
    assert normalize("'s avonds", "de") == "s avonds"
    assert normalize("'s avonds", "nl") == "'s avonds"


def test_unknown_language_raises_naming_code():
    with pytest.raises(ValueError, match=r"'pt'.*en, de, fr, es, it, nl"):
        normalize("Olá", "pt")
    with pytest.raises(ValueError):
        normalize("hello", "EN")


def test_generic_normalization():
    assert normalize_generic("Hello, Wörld! L' homme") == "hello wörld l homme"
    assert normalize_generic("STRA\u1e9eE") == "straße"
