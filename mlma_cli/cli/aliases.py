"""Old option spellings, accepted for one release with a warning, rewritten before Typer parses the line.

The spelling used by every command now (see README, "Commands"):
    -o/--output-dir DIR   where a command writes its files      -o/--output FILE   a command's one output file
    --json                flag: print JSON on stdout            -c/--checkpoint    a checkpoint or model package
One table here instead of a hidden duplicate parameter in each command.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

# command path -> {old spelling: new spelling}
DEPRECATED: Dict[str, Dict[str, str]] = {
    "tokenizer": {"--out-dir": "--output-dir", "--data": "--data-dir"},
    "decode": {"--out-dir": "--output-dir"},
    "score": {"--out-dir": "--output-dir"},
    "report": {"--out-dir": "--output-dir"},
    "lm train": {"--out": "--output"},
    "lm graph": {"--out-dir": "--output-dir"},
    "average": {"--out": "--output"},
    "train": {"-c": "--config"},  # -c means --checkpoint everywhere else
    "bench model": {"--out": "--output"},
    "bench scan": {"--out": "--output"},
    "bench decode": {"--out": "--output"},
    "bench train": {"--out": "--output"},
    "transcribe": {"--out-dir": "--output-dir", "--lang": "--language"},
    "export": {"--out": "--output-dir", "--out-dir": "--output-dir"},
    "pack": {"--out": "--output-dir", "--out-dir": "--output-dir"},
}
# `--json FILE` (write the JSON there) became `-o/--output FILE`; a bare `--json` now prints JSON on stdout.
JSON_FILE_COMMANDS = ("env", "model-info")
GROUPS = ("lm", "bench")
ROOT_FLAGS = ("-v", "--verbose")


def command_path(args: Sequence[str]) -> Tuple[str, int]:
    """('lm graph', index after it) for `-v lm graph --arpa ...`; ('', 0) when no command is given."""
    i = 0
    while i < len(args) and args[i] in ROOT_FLAGS:
        i += 1
    if i >= len(args) or args[i].startswith("-"):
        return "", i
    if args[i] in GROUPS and i + 1 < len(args) and not args[i + 1].startswith("-"):
        return f"{args[i]} {args[i + 1]}", i + 2
    return args[i], i + 1


def rewrite_deprecated(args: Sequence[str], warn: Optional[Callable[[str], None]] = None) -> List[str]:
    """Replace old option spellings of the command in ``args`` by the current ones (warning once for each)."""
    out = list(args)
    cmd, start = command_path(out)
    table = DEPRECATED.get(cmd, {})
    warned = set()

    def note(old: str, new: str) -> None:
        if warn and old not in warned:
            warn(f"{old} is deprecated for `mlma {cmd}`; use {new}")
        warned.add(old)

    i = start
    while i < len(out):
        tok = out[i]
        if tok == "--":
            break
        name, eq, value = tok.partition("=")
        if name in table:
            out[i] = table[name] + eq + value
            note(name, table[name])
        elif cmd in JSON_FILE_COMMANDS and tok == "--json" and _old_json_file(out, i, start):
            out[i] = "--output"
            note("--json FILE", "--output FILE (--json alone prints JSON)")
        elif cmd in JSON_FILE_COMMANDS and name == "--json" and eq:
            out[i] = "--output=" + value
            note("--json=FILE", "--output=FILE")
        i += 1
    return out


def _old_json_file(args: Sequence[str], i: int, start: int) -> bool:
    """Is `--json X` the old form, X a file to write? X must end in .json; for model-info (whose SPEC may be
    a .json config) another positional argument must be there too."""
    if i + 1 >= len(args) or not args[i + 1].endswith(".json"):
        return False
    if command_path(args)[0] == "env":
        return True
    others = [a for j, a in enumerate(args[start:], start)
              if j != i + 1 and not a.startswith("-") and not (j > start and args[j - 1] in VALUE_OPTIONS)]
    return bool(others)


VALUE_OPTIONS = ("--vocab-size",)  # model-info's options that take a value
