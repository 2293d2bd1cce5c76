"""Multilingual LibriSpeech: ``<root>/mls_<language>[_opus]/<split>/transcripts.txt`` + ``audio/<spk>/<book>/*.flac|opus``."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mlma_cli.data.corpora.common import RawItem, check_langs, require_dir, utf8_lines
from mlma_cli.errors import MlmaError

NAMES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian", "nl": "dutch"}
SPLITS = ("train", "dev", "test")
LAYOUT = "the MLS release: <root>/mls_<language e.g. german>[_opus]/{train,dev,test}/transcripts.txt + audio/<spk>/<book>/*.flac"


def _lang_dir(root: Path, lang: str) -> Optional[Path]:
    for suffix in ("", "_opus"):
        d = root / f"mls_{NAMES[lang]}{suffix}"
        if d.is_dir():
            return d
    return None


def discover(
    corpus_dir: Path, langs: Optional[Sequence[str]] = None, splits: Optional[Sequence[str]] = None
) -> Dict[Tuple[str, str], List[RawItem]]:
    root = require_dir("mls", Path(corpus_dir), LAYOUT)
    langs = check_langs("mls", langs, [l for l in NAMES if _lang_dir(root, l)])
    if not langs:
        raise MlmaError(f"mls: no mls_<language> directory in {root}; expected {LAYOUT}")
    out = {}
    for lang in langs:
        lang_dir = _lang_dir(root, lang)
        if lang_dir is None:
            raise MlmaError(f"mls: {root / ('mls_' + NAMES[lang])} not found; expected {LAYOUT}")
        for split in splits or SPLITS:
            out[(lang, split)] = _split_items(require_dir("mls", lang_dir / split, LAYOUT))
    return out


def _split_items(split_dir: Path) -> List[RawItem]:
    trans = split_dir / "transcripts.txt"
    if not trans.is_file():
        raise MlmaError(f"mls: {trans} not found; expected {LAYOUT}")
    audio = {p.stem: p for ext in ("flac", "opus") for p in (split_dir / "audio").glob(f"*/*/*.{ext}")}
    texts: Dict[str, str] = {}
    problems: Dict[str, str] = {}
    for _, line, problem in utf8_lines(trans):
        if line.strip():
            utt, _, text = line.partition("\t")
            texts[utt.strip()] = text
            if problem:
                problems[utt.strip()] = problem
    items = []
    for utt in sorted(set(texts) | set(audio)):
        spk, book = (utt.split("_") + ["", ""])[:2]
        path = audio.get(utt, split_dir / "audio" / spk / book / f"{utt}.flac")
        items.append(RawItem(id=utt, audio=path, text=texts.get(utt), speaker=spk, problem=problems.get(utt)))
    return items
