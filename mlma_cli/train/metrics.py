"""What users watch during training (rank 0 only): log file, metrics.jsonl, TensorBoard, PNG curves,
a rich progress bar and a per-language dev table.

Files in exp_dir:
    train.log            the plain log (everything printed, with timestamps)
    metrics.jsonl        one JSON object per record: {"kind": "train"|"valid", "step", "epoch", ...}
    tensorboard/         scalars train/loss, train/lr, train/audio_sec_per_sec, valid/loss, valid/<lang>/wer ...
    curves.png           training/validation loss, lr and dev WER per language against the step
"""
from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from mlma_cli.score.wer import chars, edit_counts, words
from mlma_cli.utils.io import atomic_path, write_text_atomic

log = logging.getLogger(__name__)


def setup_file_logging(exp_dir: Path) -> logging.Handler:
    """Append every log record of the process to exp_dir/train.log."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(exp_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


@dataclass
class LangErrors:
    """Accumulated validation numbers of one language: CTC loss, word and character errors."""

    loss_sum: float = 0.0
    tokens: int = 0
    utts: int = 0
    word_errors: int = 0
    words: int = 0
    char_errors: int = 0
    chars: int = 0

    FIELDS = ("loss_sum", "tokens", "utts", "word_errors", "words", "char_errors", "chars")

    def add_utt(self, ref: str, hyp: str) -> None:
        w, _ = edit_counts(words(ref), words(hyp))
        c, _ = edit_counts(chars(ref), chars(hyp))
        self.word_errors += w.errors
        self.words += w.ref_len
        self.char_errors += c.errors
        self.chars += c.ref_len
        self.utts += 1

    def as_list(self) -> List[float]:
        return [float(getattr(self, f)) for f in self.FIELDS]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> "LangErrors":
        return cls(**{f: type(getattr(cls, f))(v) for f, v in zip(cls.FIELDS, values)})

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.tokens, 1)

    @property
    def wer(self) -> float:
        return 100.0 * self.word_errors / max(self.words, 1)

    @property
    def cer(self) -> float:
        return 100.0 * self.char_errors / max(self.chars, 1)


def valid_summary(per_lang: Dict[str, LangErrors]) -> Dict[str, Any]:
    """Flat record: overall loss (per token) and WER/CER/utts per language."""
    total = LangErrors()
    for e in per_lang.values():
        total = LangErrors.from_list([a + b for a, b in zip(total.as_list(), e.as_list())])
    out: Dict[str, Any] = {"loss": total.loss, "wer": total.wer, "cer": total.cer}
    for lang, e in sorted(per_lang.items()):
        out[f"{lang}/wer"], out[f"{lang}/cer"], out[f"{lang}/loss"], out[f"{lang}/utts"] = e.wer, e.cer, e.loss, e.utts
    return out


def dev_table(per_lang: Dict[str, LangErrors], step: int):
    table = Table(title=f"dev @ step {step}", title_justify="left")
    for col in ("lang", "utts", "loss", "WER %", "CER %"):
        table.add_column(col, justify="right" if col != "lang" else "left")
    for lang, e in sorted(per_lang.items()):
        table.add_row(lang, str(e.utts), f"{e.loss:.3f}", f"{e.wer:.2f}", f"{e.cer:.2f}")
    return table


class MetricsWriter:
    """Writes metrics.jsonl, TensorBoard scalars and curves.png. A no-op on ranks other than 0."""

    def __init__(self, exp_dir: Path, enabled: bool = True):
        self.exp_dir = exp_dir
        self.enabled = enabled
        self.history: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
        self.tb = None
        if not enabled:
            return
        path = exp_dir / "metrics.jsonl"
        if path.is_file():  # resumed run: keep the earlier records for the curves
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.history[rec["kind"]].append(rec)
                except (ValueError, KeyError):
                    continue
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(exp_dir / "tensorboard"))
        except Exception as err:  # tensorboard missing or broken: the other outputs still work
            log.warning("TensorBoard logging disabled (%s)", err)

    def drop_after(self, step: int) -> None:
        """On resume: forget records past the checkpoint's step (they will be produced again)."""
        if not self.enabled:
            return
        kept = {kind: [r for r in recs if r.get("step", 0) <= step] for kind, recs in self.history.items()}
        if sum(map(len, kept.values())) == sum(map(len, self.history.values())):
            return
        self.history = defaultdict(list, kept)

        recs = sorted((r for rs in kept.values() for r in rs), key=lambda r: (r.get("time", 0), r["step"]))
        write_text_atomic(self.exp_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in recs))

    def write(self, kind: str, step: int, epoch: int, values: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec = {"kind": kind, "step": step, "epoch": epoch, "time": round(time.time(), 3), **values}
        self.history[kind].append(rec)
        with open(self.exp_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)
            self.tb.flush()

    def plot(self) -> Optional[Path]:
        """Redraw exp_dir/curves.png (matplotlib Agg): loss, learning rate, dev WER per language."""
        if not self.enabled or not self.history.get("train"):
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train, valid = self.history["train"], self.history.get("valid", [])
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
        if valid:
            axes[0].plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="dev")
        axes[0].set(title="CTC loss per token", xlabel="step", yscale="log")
        axes[0].legend()
        axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
        axes[1].set(title="learning rate", xlabel="step")
        langs = sorted({k.split("/")[0] for r in valid for k in r if k.endswith("/wer")})
        for lang in langs:
            pts = [(r["step"], r[f"{lang}/wer"]) for r in valid if f"{lang}/wer" in r]
            axes[2].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=lang)
        axes[2].set(title="dev WER % (greedy)", xlabel="step")
        if langs:
            axes[2].legend()
        fig.tight_layout()
        out = self.exp_dir / "curves.png"
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=80)
        plt.close(fig)
        return out

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Progress:
    """A rich progress bar for one epoch: loss, lr, seconds of audio per second, ETA. Disabled -> no-op."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress = None
        self._task = None

    def start(self, description: str, total: Optional[int], completed: int = 0) -> None:
        if not self.enabled:
            return

        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} audio-s/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=completed, loss="-", lr="-",
                                             speed="-")

    def update(self, completed: int, loss: float, lr: float, speed: float, total: Optional[int] = None) -> None:
        if self._progress is None:
            return
        kw = {"total": total} if total is not None else {}
        self._progress.update(self._task, completed=completed, loss=f"{loss:.3f}", lr=f"{lr:.2e}",
                              speed=f"{speed:.0f}", **kw)

    def print(self, renderable) -> None:
        if self._progress is not None:
            self._progress.console.print(renderable)
        else:
            Console(stderr=True).print(renderable)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
