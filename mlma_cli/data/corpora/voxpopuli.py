"""VoxPopuli transcribed data (after the official ``get_asr_data.py``):
``<root>/transcribed_data/<lang>/asr_{train,dev,test}.tsv`` + ``<lang>/<year>/<id>.ogg``.

lhotse's recipe starts from raw session audio and downloads annotations; this parser works offline on the
segmented release. tsv columns: id raw_text normalized_text speaker_id split gender is_gold_transcript accent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mlma_cli.data.corpora.common import LANGUAGES, PROBLEM, RawItem, check_langs, read_tsv, require_dir, require_file
from mlma_cli.errors import MlmaError

SPLITS = ("train", "dev", "test")
LAYOUT = "VoxPopuli transcribed data: <root>/transcribed_data/<lang>/asr_<split>.tsv + <lang>/<year>/<id>.ogg"


def discover(
    corpus_dir: Path, langs: Optional[Sequence[str]] = None, splits: Optional[Sequence[str]] = None
) -> Dict[Tuple[str, str], List[RawItem]]:
    root = require_dir("voxpopuli", Path(corpus_dir), LAYOUT)
    if (root / "transcribed_data").is_dir():
        root = root / "transcribed_data"
    langs = check_langs("voxpopuli", langs, [l for l in LANGUAGES if (root / l).is_dir()])
    if not langs:
        raise MlmaError(f"voxpopuli: no language directory in {root}; expected {LAYOUT}")
    out = {}
    for lang in langs:
        lang_dir = require_dir("voxpopuli", root / lang, LAYOUT)
        for split in splits or SPLITS:
            out[(lang, split)] = _split_items(lang_dir, require_file("voxpopuli", lang_dir / f"asr_{split}.tsv", LAYOUT))
    return out


def _split_items(lang_dir: Path, tsv: Path) -> List[RawItem]:
    columns, rows = read_tsv(tsv)
    if "id" not in columns:
        raise MlmaError(f"voxpopuli: {tsv} has no 'id' column; expected {LAYOUT}")
    items = []
    for row in rows:
        utt = (row.get("id") or "").strip()
        raw, norm = row.get("raw_text"), row.get("normalized_text")
        text = norm if norm is not None and norm.strip() else raw
        items.append(
            RawItem(
                id=utt,
                audio=lang_dir / utt[:4] / f"{utt}.ogg",
                text=text,
                speaker=row.get("speaker_id") or None,
                gender=row.get("gender") or None,
                custom={"raw_text": raw} if raw else {},
                problem=row.get(PROBLEM),
            )
        )
    return items
