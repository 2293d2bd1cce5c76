"""Transcript files as whisper writes them: txt, json, tsv, srt, vtt (`--output-format`, one file per input).

    write_outputs(transcript, out_dir, ["srt", "vtt"], stem="talk") -> [out_dir/talk.srt, out_dir/talk.vtt]

* txt: one line per segment's text.
* json: `Transcript.to_dict()` (segments -> words -> tokens with times and confidences).
* tsv: `start<TAB>end<TAB>text` header, then one row per cue, times in integer milliseconds.
* srt: numbered cues `00:00:01,000 --> 00:00:02,500`; vtt: `WEBVTT`, cues `00:00:01.000 --> 00:00:02.500`.

Cues: a segment's words, broken before a word that would make the cue longer than `MAX_CUE_CHARS` or that
follows a pause longer than `MAX_CUE_GAP`. A cue starts at its first word; CTC word ends are early (peaky
posteriors), so it stays up to `HOLD` seconds longer, never past the next cue or its segment's end.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from mlma_cli.decode.results import Transcript
from mlma_cli.utils.io import write_text_atomic

FORMATS = ("txt", "json", "tsv", "srt", "vtt")
MAX_CUE_CHARS = 84
MAX_CUE_GAP = 1.0
HOLD = 0.5

Cue = Tuple[float, float, str]


def parse_formats(spec: str) -> List[str]:
    """'srt,vtt' / 'all' -> ['srt', 'vtt'] / FORMATS; ValueError for an unknown name."""
    names = [s.strip().lower() for s in spec.replace(" ", ",").split(",") if s.strip()]
    if "all" in names:
        return list(FORMATS)
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise ValueError(f"unknown output format {', '.join(bad) or repr(spec)}; choose from {', '.join(FORMATS)}, all")
    return list(dict.fromkeys(names))


def format_timestamp(seconds: float, marker: str = ",") -> str:
    """HH:MM:SS,mmm (srt) or HH:MM:SS.mmm (vtt, marker '.')."""
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{marker}{ms:03d}"


def cues(t: Transcript) -> List[Cue]:
    """(start, end, text) subtitle cues of a transcript (see the module doc)."""
    out: List[Cue] = []
    for seg in t.segments:
        groups: List[List] = []
        for w in seg.words:
            if groups:
                cur = groups[-1]
                chars = sum(len(x.text) + 1 for x in cur) + len(w.text)
                if chars <= MAX_CUE_CHARS and w.start - cur[-1].end <= MAX_CUE_GAP:
                    cur.append(w)
                    continue
            groups.append([w])
        for k, g in enumerate(groups):
            limit = groups[k + 1][0].start if k + 1 < len(groups) else max(seg.end, g[-1].end)
            end = max(g[-1].end, min(g[-1].end + HOLD, limit))
            out.append((g[0].start, end, " ".join(w.text for w in g)))
    return out


def to_txt(t: Transcript) -> str:
    return "".join(f"{s.text}\n" for s in t.segments if s.text)


def to_json(t: Transcript) -> str:
    return json.dumps(t.to_dict(), ensure_ascii=False, indent=2) + "\n"


def to_tsv(t: Transcript) -> str:
    rows = ["start\tend\ttext"]
    rows += [f"{int(round(a * 1000))}\t{int(round(b * 1000))}\t{text}" for a, b, text in cues(t)]
    return "\n".join(rows) + "\n"


def to_srt(t: Transcript) -> str:
    return "".join(f"{i}\n{format_timestamp(a)} --> {format_timestamp(b)}\n{text}\n\n"
                   for i, (a, b, text) in enumerate(cues(t), start=1))


def to_vtt(t: Transcript) -> str:
    return "WEBVTT\n\n" + "".join(f"{format_timestamp(a, '.')} --> {format_timestamp(b, '.')}\n{text}\n\n"
                                  for a, b, text in cues(t))


WRITERS = {"txt": to_txt, "json": to_json, "tsv": to_tsv, "srt": to_srt, "vtt": to_vtt}


def output_stems(names: Sequence[str]) -> List[str]:
    """File stems for the outputs of `names` (whisper's `out/<stem>.<fmt>`); repeated stems get -2, -3, ..."""
    seen: Dict[str, int] = {}
    out = []
    for n in names:
        stem = Path(n).stem  # a cut id without a suffix stays whole
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def write_outputs(t: Transcript, out_dir: Path, formats: Sequence[str], stem: str) -> List[Path]:
    """Write `t` as each format to out_dir/<stem>.<fmt> (atomically); returns the paths."""
    paths = []
    for fmt in formats:
        p = Path(out_dir) / f"{stem}.{fmt}"
        write_text_atomic(p, WRITERS[fmt](t))
        paths.append(p)
    return paths
