"""Open-vocabulary text of the built-in synthetic corpus: sentence-like word sequences from wordfreq's word lists.

Source: the `wordfreq <https://pypi.org/project/wordfreq/>`_ package (code Apache-2.0; its word-frequency data
CC BY-SA 4.0, built by Robyn Speer from Wikipedia, OpenSubtitles, news, books, web text and other sources; see
docs/CORPUS.md). It is read from the installed package at prepare time, nothing is vendored. Each language's
vocabulary is the ``VOCAB_SIZE`` most frequent words of wordfreq's list that are written in that language's
alphabet only (no digits, no apostrophes, no foreign letters, at least one vowel, and outside English not more
frequent in English than in the language itself).

Sentences are random word sequences (3-8 words), each word drawn with probability proportional to
``frequency ** WEIGHT_EXPONENT`` (flatter than Zipf, so rarer words are heard too), the first letter capitalized
and a full stop appended. They are not grammatical; they are real words of the language that espeak-ng
pronounces by its own rules, which is what an acoustic model needs to learn to spell.

Held-out words: every word ranked below ``HELD_OUT_MIN_RANK`` (the function words stay) is held out with
probability ``HELD_OUT_FRACTION`` (a hash of seed, language and word decides, so the set does not depend on the
split sizes). Training sentences never contain a held-out word. Dev and test sentences alternate between
"seen-vocabulary" sentences (even index: new sentences made only of words that occur in the training text) and "held-out-word" sentences (odd index), in which each
word is a held-out one with probability ``HELD_OUT_TOKEN_SHARE`` (at least one per sentence). No dev or test
sentence equals a training sentence (after normalization). ``oov_stats`` measures the share of word tokens that
never occur in the training *text*, the number that matters.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Sequence, Set, Tuple

from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import LANGUAGES, normalize

VOCAB_SIZE = 10000
WEIGHT_EXPONENT = 0.5
HELD_OUT_MIN_RANK = 300
HELD_OUT_FRACTION = 0.2
HELD_OUT_TOKEN_SHARE = 0.5
MIN_WORDS, MAX_WORDS = 3, 8
WORDFREQ_HINT = "pip install 'mlma[corpus]' (wordfreq), or use --text grammar for the small closed-vocabulary corpus"
SOURCE = "wordfreq"

# Letters each language's words may use (lower case). A word with any other character is skipped.
_BASE = "abcdefghijklmnopqrstuvwxyz"
ALPHABETS = {
    "en": _BASE,
    "de": _BASE + "äöüß",
    "fr": _BASE + "àâæçéèêëîïôœùûüÿ",
    "es": _BASE + "áéíóúüñ",
    "it": _BASE + "àèéìíîòóùú",
    "nl": _BASE + "áéíóúàèëïöüç",
}
# One-letter words that are words of the language (others, such as "l", "d", "c" in French, are fragments).
ONE_LETTER = {"en": {"a", "i"}, "de": set(), "fr": {"a", "à", "y"}, "es": {"a", "y", "o", "e", "u"},
              "it": {"a", "e", "è", "o", "i"}, "nl": set()}


@dataclass
class Vocabulary:
    """One language's word list: ``words[i]`` with sampling weight ``weights[i]`` (rank order), held-out set."""

    lang: str
    words: List[str]
    weights: List[float]
    held_out: Set[str]

    def train_words(self) -> Tuple[List[str], List[float]]:
        pairs = [(w, p) for w, p in zip(self.words, self.weights) if w not in self.held_out]
        return [w for w, _ in pairs], [p for _, p in pairs]

    def held_out_words(self) -> Tuple[List[str], List[float]]:
        pairs = [(w, p) for w, p in zip(self.words, self.weights) if w in self.held_out]
        return [w for w, _ in pairs], [p for _, p in pairs]


def _wordfreq():
    try:
        import wordfreq
    except ImportError:
        raise MlmaError(f"the open-vocabulary synthetic corpus needs the wordfreq package: {WORDFREQ_HINT}") from None
    return wordfreq


def _held_out(seed: int, lang: str, word: str) -> bool:
    digest = hashlib.sha256(f"mlma-held-out:{seed}:{lang}:{word}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT_FRACTION


_VOWELS = set("aeiouyäöüàâæéèêëîïôœùûÿáíóúì")


def _usable(word: str, lang: str, wf) -> bool:
    if not word or any(ch not in ALPHABETS[lang] for ch in word):
        return False
    if len(word) == 1 and word not in ONE_LETTER[lang]:
        return False
    if not _VOWELS & set(word):  # abbreviations such as "http", "ggd"
        return False
    if lang != "en" and wf.word_frequency(word, "en") > wf.word_frequency(word, lang):
        return False  # an English word in another language's list ("but", "the" in Dutch web text)
    return normalize(word, lang) == word


@lru_cache(maxsize=None)
def load_vocabulary(lang: str, seed: int = 0, size: int = VOCAB_SIZE) -> Vocabulary:
    """The ``size`` most frequent usable words of ``lang`` from wordfreq, their weights and the held-out set."""
    if lang not in LANGUAGES:
        raise MlmaError(f"no open-vocabulary word list for language {lang!r}; supported: {', '.join(LANGUAGES)}")
    wf = _wordfreq()
    words: List[str] = []
    weights: List[float] = []
    for word in wf.top_n_list(lang, size * 3, wordlist="best"):
        if len(words) >= size:
            break
        if _usable(word, lang, wf) and word not in words[-50:]:
            words.append(word)
            weights.append(wf.word_frequency(word, lang, wordlist="best") ** WEIGHT_EXPONENT)
    if len(words) < size // 2:
        raise MlmaError(f"wordfreq gave only {len(words)} usable {lang} words (want {size}); "
                        f"is the installed wordfreq complete? {WORDFREQ_HINT}")
    held = {w for rank, w in enumerate(words) if rank >= HELD_OUT_MIN_RANK and _held_out(seed, lang, w)}
    return Vocabulary(lang, words, weights, held)


def _sentence(rng: random.Random, words: Sequence[str], cum: Sequence[float], n: int) -> List[str]:
    return rng.choices(words, cum_weights=cum, k=n)


def _cumulative(weights: Sequence[float]) -> List[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def _render(tokens: List[str]) -> str:
    text = " ".join(tokens)
    return text[:1].upper() + text[1:] + "."


def split_sentences(lang: str, counts: Dict[str, int], seed: int = 0) -> Dict[str, List[str]]:
    """Distinct sentences per split; "train" uses no held-out word, other splits alternate seen-vocabulary and
    held-out-word sentences (even / odd index) and never repeat a training sentence."""
    vocab = load_vocabulary(lang, seed)
    t_words, t_weights = vocab.train_words()
    h_words, h_weights = vocab.held_out_words()
    t_cum, h_cum = _cumulative(t_weights), _cumulative(h_weights)
    seen: Set[str] = set()
    seen_words: Set[str] = set()
    s_words: List[str] = []
    s_cum: List[float] = []
    out: Dict[str, List[str]] = {}
    for split in sorted(counts, key=lambda s: (s != "train", s)):
        rng = random.Random(f"mlma-open-text:{seed}:{lang}:{split}")
        if split != "train":  # seen-vocabulary sentences: only words of the training text
            pairs = [(w, p) for w, p in zip(t_words, t_weights) if w in seen_words] or list(zip(t_words, t_weights))
            s_words, s_cum = [w for w, _ in pairs], _cumulative([p for _, p in pairs])
        picked: List[str] = []
        misses = 0
        while len(picked) < counts[split]:
            n = rng.randint(MIN_WORDS, MAX_WORDS)
            if split == "train":
                tokens = _sentence(rng, t_words, t_cum, n)
            elif len(picked) % 2 == 0:
                tokens = _sentence(rng, s_words, s_cum, n)
            else:
                mask = [rng.random() < HELD_OUT_TOKEN_SHARE for _ in range(n)]
                if not any(mask):
                    mask[rng.randrange(n)] = True
                tokens = [_sentence(rng, h_words, h_cum, 1)[0] if m else _sentence(rng, t_words, t_cum, 1)[0]
                          for m in mask]
            key = " ".join(tokens)
            if key in seen:
                misses += 1
                if misses > 10000:
                    raise MlmaError(f"could not draw {counts[split]} distinct {lang} {split} sentences")
                continue
            seen.add(key)
            if split == "train":
                seen_words.update(tokens)
            picked.append(_render(tokens))
        out[split] = picked
    return out


def words_of(sentences: Sequence[str], lang: str) -> List[str]:
    return [w for s in sentences for w in normalize(s, lang).split()]


def oov_stats(lang: str, splits: Dict[str, Sequence[str]]) -> Dict[str, dict]:
    """Per non-train split: word tokens, tokens never in the training text, their share (%), distinct words,
    sentences with at least one such word; for "train": tokens and distinct words."""
    train_vocab = set(words_of(splits.get("train", ()), lang))
    out: Dict[str, dict] = {}
    for split, sentences in splits.items():
        tokens = words_of(sentences, lang)
        row = {"sentences": len(sentences), "tokens": len(tokens), "types": len(set(tokens))}
        if split != "train":
            oov = [w for w in tokens if w not in train_vocab]
            row.update(oov_tokens=len(oov), oov_rate=round(100.0 * len(oov) / max(1, len(tokens)), 2),
                       oov_types=len(set(oov)),
                       sentences_with_oov=sum(any(w not in train_vocab for w in normalize(s, lang).split())
                                              for s in sentences))
        out[split] = row
    return out


def has_oov(sentence: str, lang: str, train_vocab: Set[str]) -> bool:
    return any(w not in train_vocab for w in normalize(sentence, lang).split())


