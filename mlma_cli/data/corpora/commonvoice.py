"""Common Voice, one extracted release: ``<root>/<lang>/clips/*.mp3`` + ``validated.tsv train.tsv dev.tsv test.tsv``."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mlma_cli.data.corpora.common import LANGUAGES, PROBLEM, RawItem, check_langs, read_tsv, require_dir, require_file
from mlma_cli.errors import MlmaError

SPLITS = ("train", "dev", "test")
LAYOUT = "an extracted Common Voice release: <root>/<lang>/clips/*.mp3 + validated.tsv train.tsv dev.tsv test.tsv"


def discover(
    corpus_dir: Path, langs: Optional[Sequence[str]] = None, splits: Optional[Sequence[str]] = None
) -> Dict[Tuple[str, str], List[RawItem]]:
    """Items per ``(lang, split)``; languages default to those of ours present as ``<root>/<lang>/``.

    ``splits`` may name any ``<split>.tsv`` of the release (train dev test validated other ...).
    """
    root = require_dir("commonvoice", Path(corpus_dir), LAYOUT)
    found = [d.name for d in root.iterdir() if d.is_dir() and d.name in LANGUAGES]
    langs = check_langs("commonvoice", langs, found)
    if not langs:
        raise MlmaError(f"commonvoice: no language directory ({' '.join(LANGUAGES)}) in {root}; expected {LAYOUT}")
    out = {}
    for lang in langs:
        lang_dir = require_dir("commonvoice", root / lang, LAYOUT)
        require_dir("commonvoice", lang_dir / "clips", LAYOUT)
        require_file("commonvoice", lang_dir / "validated.tsv", LAYOUT)
        for split in splits or SPLITS:
            out[(lang, split)] = _split_items(lang_dir, lang, require_file("commonvoice", lang_dir / f"{split}.tsv", LAYOUT))
    return out


def _split_items(lang_dir: Path, lang: str, tsv: Path) -> List[RawItem]:
    columns, rows = read_tsv(tsv)
    if "path" not in columns or "sentence" not in columns:
        raise MlmaError(f"commonvoice: {tsv} has no 'path'/'sentence' columns (has: {' '.join(columns)}); expected {LAYOUT}")
    items = []
    for n, row in enumerate(rows, start=2):
        name = (row.get("path") or "").strip()
        if not name:
            items.append(RawItem(id=f"{tsv.stem}-line{n}", audio=tsv, text=None, problem=f"line {n}: no clip path"))
            continue
        locale = (row.get("locale") or "").strip()
        problem = row.get(PROBLEM)
        if not problem and locale and locale.split("-")[0] != lang:
            problem = f"unknown or foreign language code '{locale}' in a '{lang}' release directory"
        custom = {k: row[k] for k in ("age", "accents", "variant") if row.get(k)}
        items.append(
            RawItem(
                id=Path(name).stem,
                audio=lang_dir / "clips" / name,
                text=row.get("sentence"),
                speaker=row.get("client_id") or None,
                gender=row.get("gender") or None,
                custom=custom,
                problem=problem,
            )
        )
    return items
