"""Sentence grammars of the built-in synthetic corpus, shipped as ``<lang>.txt`` beside this file.

Each grammar is a small word inventory (subjects with grammatical gender, verbs, objects, adjectives, times,
places, numbers) plus templates; ``generate_sentences`` composes distinct sentences from it deterministically for
a seed. The bounded vocabulary (about 150 words a language) is what makes the corpus learnable by a tiny model.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import LANGUAGES, normalize

_DIR = Path(__file__).resolve().parent
_SLOT = re.compile(r"\{([a-z_]+?)(2?)\}")
MAX_WORDS = 10  # longer sentences are dropped: utterances stay within ~1-4 s of speech


@dataclass
class Grammar:
    """Slot fillers and templates of one language. ``slots[name]`` holds (text, gender) pairs."""

    lang: str
    slots: Dict[str, List[Tuple[str, str]]] = field(default_factory=dict)
    templates: List[str] = field(default_factory=list)

    def words(self) -> set:
        """Every normalized word the grammar can produce (templates' literal words included)."""
        out = set()
        for fillers in self.slots.values():
            for text, _ in fillers:
                for form in text.split("/"):
                    out.update(normalize(form, self.lang).split())
        for tpl in self.templates:
            out.update(normalize(_SLOT.sub(" ", tpl), self.lang).split())
        return out


def grammar_path(lang: str) -> Path:
    return _DIR / f"{lang}.txt"


@lru_cache(maxsize=None)
def load_grammar(lang: str) -> Grammar:
    """Parse ``<lang>.txt``; a malformed file raises MlmaError naming the file and line."""
    if lang not in LANGUAGES:
        raise MlmaError(f"no synthetic sentence grammar for language {lang!r}; supported: {', '.join(LANGUAGES)}")
    path = grammar_path(lang)
    if not path.is_file():
        raise MlmaError(f"sentence grammar {path} is missing; reinstall mlma (it ships with the package)")
    grammar = Grammar(lang)
    section = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            if section != "template":
                grammar.slots.setdefault(section, [])
            continue
        if section is None:
            raise MlmaError(f"{path}:{lineno}: text before the first [section] header")
        if section == "template":
            grammar.templates.append(line)
            continue
        text, _, gender = (p.strip() for p in line.partition("|"))
        grammar.slots[section].append((text, gender or "m"))
    for tpl in grammar.templates:
        for name, _ in _SLOT.findall(tpl):
            if not grammar.slots.get(name):
                raise MlmaError(f"{path}: template {tpl!r} uses slot {{{name}}} with no [{name}] entries")
    if not grammar.templates:
        raise MlmaError(f"{path}: no [template] lines")
    return grammar


def _fill(grammar: Grammar, template: str, rng: random.Random) -> str:
    chosen: Dict[str, Tuple[str, str]] = {}

    def pick(name: str, second: str) -> Tuple[str, str]:
        key = name + second
        if key not in chosen:
            options = grammar.slots[name]
            first = chosen.get(name)
            while True:
                choice = options[rng.randrange(len(options))]
                if not second or first is None or choice != first or len(options) == 1:
                    break
            chosen[key] = choice
        return chosen[key]

    # Subjects first, so adjectives can agree with them whatever the template order.
    for name, second in _SLOT.findall(template):
        if name == "subject":
            pick(name, second)

    def repl(m: "re.Match[str]") -> str:
        name, second = m.group(1), m.group(2)
        text, _ = pick(name, second)
        if "/" in text:  # gendered forms "male/female" agree with the subject of the same index
            subject = chosen.get("subject" + second)
            male, _, female = text.partition("/")
            text = female if subject is not None and subject[1] == "f" else male
        return text

    sentence = _SLOT.sub(repl, template)
    for i, ch in enumerate(sentence):  # capitalize the first letter ("¿dónde" -> "¿Dónde")
        if ch.isalpha():
            return sentence[:i] + ch.upper() + sentence[i + 1:]
    return sentence


def iter_sentences(lang: str, seed: int = 0) -> Iterator[str]:
    """Endless deterministic stream of distinct sentences (distinct after normalization) for ``lang``.

    Stops when the grammar stops yielding new sentences (after many consecutive repeats).
    """
    grammar = load_grammar(lang)
    rng = random.Random(f"mlma-synthetic:{lang}:{seed}")
    seen = set()
    misses = 0
    while misses < 10000:
        sentence = _fill(grammar, grammar.templates[rng.randrange(len(grammar.templates))], rng)
        key = normalize(sentence, lang)
        if key in seen or len(key.split()) > MAX_WORDS:
            misses += 1
            continue
        misses = 0
        seen.add(key)
        yield sentence


def split_sentences(lang: str, counts: Dict[str, int], seed: int = 0) -> Dict[str, List[str]]:
    """Distinct sentences per split with no overlap; every word of a non-train split also occurs in train.

    ``counts`` maps split name to size; the split named "train" (if any) is drawn first.
    """
    stream = iter_sentences(lang, seed)
    order = sorted(counts, key=lambda s: (s != "train", s))
    out: Dict[str, List[str]] = {}
    train_words: set = set()
    for split in order:
        picked: List[str] = []
        budget = 50 * counts[split] + 2000  # a tiny train split cannot cover the vocabulary: stop insisting
        while len(picked) < counts[split]:
            sentence = next(stream, None)
            if sentence is None:
                raise MlmaError(
                    f"the {lang} sentence grammar yields fewer distinct sentences than asked for "
                    f"({counts}); ask for fewer utterances"
                )
            words = normalize(sentence, lang).split()
            budget -= 1
            if split != "train" and budget > 0 and not set(words) <= train_words:
                continue  # keep test words inside the training vocabulary
            picked.append(sentence)
            if split == "train":
                train_words.update(words)
        out[split] = picked
    return out
