"""Text normalization for the six mlma languages: one function for training text, references and hypotheses.

Rules (all languages), applied in this order:
  1. Unicode NFKC (compatibility mapping: ligatures ``ﬁ``/``ĳ`` -> ``fi``/``ij``, no-break spaces, full-width
     forms, superscripts); typographic apostrophes (’ ‘ ʼ ´ ` ′) become ``'``; soft hyphens and zero-width
     characters are dropped.
  2. Lower case with ``str.lower`` (not ``casefold``), so German ``ß`` stays ``ß`` and ``ẞ`` becomes ``ß``.
  3. Every letter (with its diacritics) and every digit is kept; any other character (punctuation, quotes,
     dashes and hyphens, symbols such as ``%`` or ``€``) becomes a word boundary. ``peut-être`` -> ``peut être``,
     ``3.5`` -> ``3 5``. Numbers are not spelled out.
  4. Apostrophes survive only inside a word (``don't``, ``aujourd'hui``, ``dell'acqua``, ``auto's``); leading and
     trailing ones (quotes, ``dogs'``) are dropped.
  5. Whitespace is collapsed to single spaces; the result is NFC and has no leading/trailing space.

Language rules:
  * fr, it: an elided word is one token with the following word: ``l' homme`` and ``l 'homme`` -> ``l'homme``.
    A word ending in ``'`` is joined to the next word when it ends in a consonant (elision: ``l'``, ``qu'``,
    ``dell'``, ``quell'``) or in ``qu`` (``qu'``, ``jusqu'``); Italian truncations ending in a vowel (``po'``, ``di'``) stay separate and
    lose the apostrophe like any trailing one.
  * nl: the clitics ``'s 't 'n 'k 'm 'r 'ns`` keep their leading apostrophe (``'s avonds``); the ligature ``ĳ`` is
    ``ij``.
  * es: the inverted marks ``¿ ¡`` are punctuation and removed.
  * de: ``ß`` is kept (never ``ss``).

``normalize`` is idempotent: ``normalize(normalize(t, l), l) == normalize(t, l)``.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Optional

LANGUAGES = ("en", "de", "fr", "es", "it", "nl")

_APOSTROPHES = "\u2019\u2018\u02bc\u02bb\u00b4\u0060\u2032\uff07\u201b"
_APOSTROPHE_TABLE = str.maketrans({c: "'" for c in _APOSTROPHES})
_VOWELS = set("aeiouyàáâãäåæèéêëìíîïòóôõöøœùúûüýÿ")
_NL_CLITICS = {"'s", "'t", "'n", "'k", "'m", "'r", "'ns"}
# fr/it: "l 'homme" (apostrophe attached to the next word after a one-letter elided article/pronoun).
_DETACHED_ELISION = re.compile(r"(?<!\S)(qu|[ldjmnstc]) '(?=\w)")
# fr/it: "l' homme": a word ending in an apostrophe followed by a space and a word.
_TRAILING_ELISION = re.compile(r"(?<!\S)(\w+)' +(?=[^\W\d_])")
_SPACES = re.compile(r"\s+")


def _check_lang(lang: str) -> None:
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language code {lang!r}; supported: {', '.join(LANGUAGES)}")


def _char_filter(text: str) -> str:
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "LM" or cat == "Nd" or ch == "'":
            out.append(ch)
        elif cat == "Cf":  # soft hyphen, zero-width (non-)joiners, BOM: invisible, not a word boundary
            continue
        else:
            out.append(" ")
    return "".join(out)


def _join_elisions(text: str) -> str:
    text = _DETACHED_ELISION.sub(r"\1'", text)

    def join(m: "re.Match[str]") -> str:
        word = m.group(1)
        if (word[-1].isalpha() and word[-1] not in _VOWELS) or word.endswith("qu"):
            return word + "'"
        return m.group(0)

    return _TRAILING_ELISION.sub(join, text)


def _clean_token(token: str, lang: Optional[str]) -> str:
    token = re.sub(r"'{2,}", "'", token)
    if lang == "nl" and token in _NL_CLITICS:
        return token
    return token.strip("'")


def _normalize(text: str, lang: Optional[str]) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHE_TABLE)
    text = unicodedata.normalize("NFC", text.lower())
    text = _char_filter(text)
    text = _SPACES.sub(" ", text)
    if lang in ("fr", "it"):
        text = _join_elisions(text)
    tokens = (_clean_token(t, lang) for t in text.split(" "))
    return unicodedata.normalize("NFC", " ".join(t for t in tokens if t))


def normalize(text: str, lang: str) -> str:
    """Normalize ``text`` written in language ``lang`` (one of ``LANGUAGES``); see the module doc for the rules.

    Raises ValueError for an unsupported language code.
    """
    _check_lang(lang)
    return _normalize(text, lang)


def normalize_generic(text: str) -> str:
    """The language-independent part of ``normalize`` (no elision joining, no Dutch clitics).

    For text whose language is unknown, e.g. ``Tokenizer.encode(text)`` without ``lang``.
    """
    return _normalize(text, None)
