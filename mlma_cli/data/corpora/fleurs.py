"""FLEURS as released on the HF hub: ``<root>/<code e.g. de_de>/{train,dev,test}.tsv`` + ``audio/<split>/*.wav``.

Also accepted: the hub's ``<root>/data/<code>/`` and lhotse's download layout
(``<root>/<code>/<split>/*.wav`` + ``<root>/metadata/<code>/<split>.tsv``). The tsv files have no header:
``id  file_name  raw_transcription  transcription  characters  num_samples  gender``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mlma_cli.data.corpora.common import RawItem, check_langs, require_dir, utf8_lines
from mlma_cli.errors import MlmaError

CODES = {"en": "en_us", "de": "de_de", "fr": "fr_fr", "es": "es_419", "it": "it_it", "nl": "nl_nl"}
SPLITS = ("train", "dev", "test")
LAYOUT = "the FLEURS release: <root>/<code e.g. de_de>/{train,dev,test}.tsv + audio/<split>/*.wav"


def _root(corpus_dir: Path) -> Path:
    root = require_dir("fleurs", corpus_dir, LAYOUT)
    if not any((root / c).is_dir() for c in CODES.values()) and (root / "data").is_dir():
        return root / "data"
    return root


def discover(
    corpus_dir: Path, langs: Optional[Sequence[str]] = None, splits: Optional[Sequence[str]] = None
) -> Dict[Tuple[str, str], List[RawItem]]:
    """Items per ``(iso lang, split)``; FLEURS codes map to ours (de_de -> de, es_419 -> es ...)."""
    root = _root(Path(corpus_dir))
    found = [iso for iso, code in CODES.items() if (root / code).is_dir()]
    langs = check_langs("fleurs", langs, found)
    if not langs:
        raise MlmaError(f"fleurs: no language directory ({' '.join(CODES.values())}) in {root}; expected {LAYOUT}")
    out = {}
    for lang in langs:
        code_dir = require_dir("fleurs", root / CODES[lang], LAYOUT)
        for split in splits or SPLITS:
            out[(lang, split)] = _split_items(root, code_dir, split)
    return out


def _split_items(root: Path, code_dir: Path, split: str) -> List[RawItem]:
    tsv = code_dir / f"{split}.tsv"
    if not tsv.is_file():
        tsv = root / "metadata" / code_dir.name / f"{split}.tsv"
    if not tsv.is_file():
        raise MlmaError(f"fleurs: {code_dir / f'{split}.tsv'} not found; expected {LAYOUT}")
    audio_dir = code_dir / "audio" / split
    if not audio_dir.is_dir() and (code_dir / split).is_dir():
        audio_dir = code_dir / split
    if not audio_dir.is_dir():
        tar = code_dir / "audio" / f"{split}.tar.gz"
        hint = f"extract {tar} there (tar xzf)" if tar.is_file() else f"expected {LAYOUT}"
        raise MlmaError(f"fleurs: audio directory {code_dir / 'audio' / split} not found; {hint}")
    items = []
    for n, line, problem in utf8_lines(tsv):
        row = line.split("\t")
        if not "".join(row).strip():
            continue
        if len(row) < 2:
            raise MlmaError(f"fleurs: {tsv} line {n} has {len(row)} column(s); expected 7 tab-separated columns ({LAYOUT})")
        name = row[1].strip()
        raw = row[2] if len(row) > 2 else None
        norm = row[3] if len(row) > 3 else None
        text = raw if raw and raw.strip() else norm
        items.append(
            RawItem(
                id=Path(name).stem,
                audio=audio_dir / name,
                text=text,
                speaker=row[0].strip(),
                gender=(row[6].strip() or None) if len(row) > 6 else None,
                custom={"transcription": norm} if norm else {},
                problem=problem,
            )
        )
    return items
