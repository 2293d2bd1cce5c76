"""Fault handling during training: bad batches (NaN/inf loss, CUDA OOM) and stop signals.

- A batch whose loss is not finite, or whose gradients are not finite, is skipped: counted, its cut ids logged.
  The run stops (with a checkpoint) only after ``max_consecutive`` skipped batches in a row.
- A CUDA out-of-memory error in the forward/backward pass is caught, logged with the batch's audio duration,
  and the batch skipped (lower ``data.max_duration`` when it happens often).
- SIGINT (Ctrl-C) and SIGTERM (cluster preemption) set a flag; the loop finishes the current step, writes a
  checkpoint and exits. A second Ctrl-C interrupts immediately.
"""
from __future__ import annotations

import logging
import signal
from typing import List, Optional, Sequence

import torch

from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


class BadBatchTracker:
    """Counts skipped batches; raises MlmaError after ``max_consecutive`` in a row."""

    def __init__(self, max_consecutive: int):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0
        self.by_reason: dict = {}

    def ok(self) -> None:
        self.consecutive = 0

    def skip(self, reason: str, cut_ids: Sequence[str], duration: float, step: int) -> None:
        self.consecutive += 1
        self.total += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        shown = ", ".join(list(cut_ids)[:20]) + (" ..." if len(cut_ids) > 20 else "")
        log.warning("step %d: skipped batch (%s; %d cuts, %.1f s of audio; %d skipped so far): %s",
                    step, reason, len(cut_ids), duration, self.total, shown)
        if self.consecutive >= self.max_consecutive:
            raise MlmaError(f"{self.consecutive} consecutive batches failed ({reason}); last cuts: {shown}. "
                            "Check the data and lower train.lr or data.max_duration, then resume")

    def state_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(self.by_reason)}

    def load_state_dict(self, sd: Optional[dict]) -> None:
        if sd:
            self.total = int(sd.get("total", 0))
            self.by_reason = dict(sd.get("by_reason", {}))


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the training loop polls; restores the old handlers on close()."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: Optional[str] = None
        self._old: List = []

    def install(self) -> "StopFlag":
        try:
            self._old = [(s, signal.signal(s, self._handle)) for s in self.SIGNALS]
        except ValueError:  # not the main thread (e.g. called from a worker thread): no signal handling
            self._old = []
        return self

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.requested = name
        log.warning("%s received: finishing this step, writing a checkpoint, then exiting "
                    "(press Ctrl-C again to stop immediately)", name)

    def close(self) -> None:
        for s, old in self._old:
            signal.signal(s, old)
        self._old = []
