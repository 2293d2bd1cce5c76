"""Typed transcription results: Transcript -> segments -> words -> tokens, each with start/end seconds in the file.

Times come from the CTC alignment (see `decode.timestamps`); `confidence` is a posterior probability in [0, 1]:
a token's is its peak frame posterior, a word's the mean of its tokens', a segment's the mean of its words'.
`to_dict()` gives the JSON layout of `mlma transcribe --json` / `--output-format json` (times rounded to ms).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence


def _r(x: float) -> float:
    return round(float(x), 3)


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


@dataclass
class Token:
    """One emitted CTC token (a SentencePiece piece, `▁` marks a word start); language tags are not tokens here."""

    id: int
    text: str
    start: float
    end: float
    confidence: float

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "start": _r(self.start), "end": _r(self.end),
                "confidence": _r(self.confidence)}


@dataclass
class Word:
    text: str
    start: float
    end: float
    confidence: float
    tokens: List[Token] = field(default_factory=list)

    def to_dict(self, tokens: bool = True) -> dict:
        d = {"text": self.text, "start": _r(self.start), "end": _r(self.end), "confidence": _r(self.confidence)}
        if tokens:
            d["tokens"] = [t.to_dict() for t in self.tokens]
        return d


@dataclass
class Segment:
    """A stretch of the file decoded on its own (a VAD speech region, a window, or the whole file)."""

    start: float
    end: float
    text: str
    language: Optional[str] = None  # language tag the model emitted in this segment (tagged tokenizers)
    words: List[Word] = field(default_factory=list)

    @property
    def tokens(self) -> List[Token]:
        return [t for w in self.words for t in w.tokens]

    @property
    def confidence(self) -> float:
        return _mean(w.confidence for w in self.words)

    def to_dict(self, tokens: bool = True) -> dict:
        return {"start": _r(self.start), "end": _r(self.end), "text": self.text, "language": self.language,
                "confidence": _r(self.confidence), "words": [w.to_dict(tokens) for w in self.words]}


@dataclass
class Transcript:
    """The result for one input (file, array or manifest item).

    `file` is the path (or the name given for an array / the cut id); `duration` the audio length in seconds;
    `seconds` the processing time attributed to it (batches are shared: split by audio length).
    """

    file: str
    text: str
    language: Optional[str]
    duration: float
    seconds: float = 0.0
    segments: List[Segment] = field(default_factory=list)

    @property
    def words(self) -> List[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def tokens(self) -> List[Token]:
        return [t for s in self.segments for t in s.tokens]

    @property
    def rtf(self) -> float:
        return self.seconds / max(self.duration, 1e-9)

    def to_dict(self, tokens: bool = True) -> dict:
        return {"file": self.file, "text": self.text, "language": self.language, "duration": _r(self.duration),
                "seconds": _r(self.seconds), "rtf": round(self.rtf, 4),
                "segments": [s.to_dict(tokens) for s in self.segments]}


def majority_language(segments: Sequence[Segment]) -> Optional[str]:
    """The language tag the segments emitted over the most audio time (None when none emitted one)."""
    votes: Dict[str, float] = {}
    for s in segments:
        if s.language:
            votes[s.language] = votes.get(s.language, 0.0) + s.end - s.start
    return max(votes, key=votes.get) if votes else None
