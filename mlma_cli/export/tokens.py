"""tokens.txt, the symbol table sherpa-onnx reads: one ``<piece> <id>`` line per token, ``<blk>`` is id 0."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Union

from mlma_cli.errors import MlmaError
from mlma_cli.utils.io import write_text_atomic

PathLike = Union[str, os.PathLike]


def write_tokens(pieces: Sequence[str], path: PathLike) -> Path:
    """Write ``pieces`` (index = id) as tokens.txt; pieces must be free of whitespace (SentencePiece's are)."""
    bad = [p for p in pieces if not p or any(c.isspace() for c in p)]
    if bad:
        raise ValueError(f"tokens with whitespace cannot go in tokens.txt: {bad[:5]}")
    write_text_atomic(path, "".join(f"{p} {i}\n" for i, p in enumerate(pieces)))
    return Path(path)


def read_tokens(path: PathLike) -> List[str]:
    """Pieces by id from tokens.txt; MlmaError when the file is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise MlmaError(f"{path} not found; export the model again with `mlma export`")
    table = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise MlmaError(f"{path}:{n}: expected '<piece> <id>', got {line!r}")
        table[int(parts[1])] = parts[0]
    if sorted(table) != list(range(len(table))):
        raise MlmaError(f"{path}: token ids are not 0..{len(table) - 1} without gaps")
    return [table[i] for i in range(len(table))]
