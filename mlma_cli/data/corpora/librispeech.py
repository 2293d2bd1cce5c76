"""LibriSpeech: ``<root>/LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` + ``<spk>-<chapter>.trans.txt``."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mlma_cli.data.corpora.common import RawItem, check_langs, require_dir, utf8_lines
from mlma_cli.errors import MlmaError

PARTS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360", "train-other-500")
LAYOUT = "<root>/LibriSpeech/<part e.g. dev-clean>/<speaker>/<chapter>/*.flac + *.trans.txt"


def _root(corpus_dir: Path) -> Path:
    require_dir("librispeech", corpus_dir, LAYOUT)
    if (corpus_dir / "LibriSpeech").is_dir():
        return corpus_dir / "LibriSpeech"
    return corpus_dir


def discover(
    corpus_dir: Path, langs: Optional[Sequence[str]] = None, splits: Optional[Sequence[str]] = None
) -> Dict[Tuple[str, str], List[RawItem]]:
    """Items per ``("en", part)``; ``splits`` defaults to every known part present."""
    if check_langs("librispeech", langs, ["en"]) != ["en"]:
        raise MlmaError(f"librispeech: the corpus is English only; use --langs en (got {','.join(langs or [])})")
    root = _root(Path(corpus_dir))
    present = [p for p in PARTS if (root / p).is_dir()]
    if splits is None:
        if not present:
            raise MlmaError(f"librispeech: no LibriSpeech part (dev-clean, train-clean-100, ...) in {root}; expected {LAYOUT}")
        splits = present
    out = {}
    for part in splits:
        if part not in present:
            raise MlmaError(f"librispeech: {root / part} not found; expected {LAYOUT} (parts present: {' '.join(present) or 'none'})")
        out[("en", part)] = _part_items(root / part)
    return out


def _part_items(part_dir: Path) -> List[RawItem]:
    trans_files = sorted(part_dir.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise MlmaError(f"librispeech: no */*/*.trans.txt under {part_dir}; expected {LAYOUT}")
    items: List[RawItem] = []
    for trans in trans_files:
        chapter_dir = trans.parent
        texts: Dict[str, str] = {}
        problems: Dict[str, str] = {}
        for _, line, problem in utf8_lines(trans):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            texts[utt] = text
            if problem:
                problems[utt] = problem
        audio = {p.stem: p for p in chapter_dir.glob("*.flac")}
        for utt in sorted(set(texts) | set(audio)):
            path = audio.get(utt, chapter_dir / f"{utt}.flac")
            items.append(RawItem(id=utt, audio=path, text=texts.get(utt), speaker=utt.split("-")[0],
                                 problem=problems.get(utt)))
    return items
