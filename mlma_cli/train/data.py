"""Training data: datasets from the config list, temperature-based mixing, filters, batches.

The path of a training cut::

    data.train entries --resolve_sources--> Source (one per dataset: manifests, language, hours, #cuts)
        --TemperatureMixer--> one lazy stream per epoch, source i drawn with probability p_i
        --CutFilter--> too short / too long / more tokens than CTC output frames are dropped (counted, listed)
        --DynamicBucketingSampler--> CutSet batches of <= max_duration seconds, sharded by DDP rank
        --AsrDataset--> {"feats" (B, T, F), "feat_lens" (B,), "targets" (sum U,), "target_lens" (B,), ...}

Temperature sampling: language l holds H_l hours; it is drawn with probability P_l = H_l^alpha / sum_k H_k^alpha,
and the sources of one language share P_l in proportion to their hours (times the entry's ``weight``).
An epoch is as many draws as there are cuts in all sources, so a low-resource language is repeated within an
epoch and a high-resource one subsampled. Each source is read as an endless cycle that continues where the
previous epoch stopped, so subsampled sources are still covered evenly over epochs; the draws of epoch e come
from a generator seeded with (seed, e), which makes every epoch reproducible (and resumable mid-epoch) from
the sampler's state alone.
"""
from __future__ import annotations

import copy
import json
import logging
import random
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler, OnTheFlyFeatures, PrecomputedFeatures, SpecAugment

from mlma_cli.data.features import fbank_extractor
from mlma_cli.data.layout import fbank_dir, find_datasets, parse_dataset
from mlma_cli.errors import MlmaError
from mlma_cli.train.config import DEFAULT_SPEC_AUGMENT, DataConfig
from mlma_cli.utils.io import write_json_atomic

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- sources
_PERTURBED = re.compile(r"_sp\d+(\.\d+)?$")


def is_speed_perturbed(cut) -> bool:
    """Speed-perturbed copies written by ``mlma features`` carry lhotse's ``_sp<factor>`` id suffix."""
    return bool(_PERTURBED.search(cut.id))


@dataclass
class Source:
    """One training dataset ``corpus/lang/split`` and where its cuts are read from."""

    name: str
    lang: str
    manifest: Path                 # DATA/fbank/<corpus>/<lang>/<split>/cuts.jsonl.gz
    weight: float = 1.0            # multiplier from the config entry
    speed_perturb: bool = True     # keep the _sp0.9 / _sp1.1 copies when the manifest has them
    shar_dir: Optional[Path] = None
    num_cuts: int = 0
    hours: float = 0.0

    def cuts(self) -> CutSet:
        """Lazily read cuts (Shar shards when configured, else the fbank manifest)."""
        cuts = CutSet.from_shar(in_dir=self.shar_dir) if self.shar_dir is not None else CutSet.from_file(self.manifest)
        if not self.speed_perturb:
            cuts = cuts.filter(_not_perturbed)
        return cuts


def _not_perturbed(cut) -> bool:
    return not is_speed_perturbed(cut)


def expand_dataset_names(data_dir: str | Path, pattern: str) -> List[str]:
    """``corpus/lang/split`` names matching ``pattern`` (``*`` globs) that have fbank cuts under ``data_dir``."""
    if "*" not in pattern and "?" not in pattern:
        parse_dataset(pattern)  # MlmaError for a malformed name
        return [pattern]
    names = find_datasets(data_dir, pattern, kind="fbank")
    if not names:
        raise MlmaError(f"no datasets match {pattern!r} under {Path(data_dir) / 'fbank'}; run `mlma features` first")
    return names


def _manifest_of(data_dir: str | Path, name: str) -> Path:
    path = fbank_dir(data_dir, *parse_dataset(name)) / "cuts.jsonl.gz"
    if not path.is_file():
        raise MlmaError(f"dataset {name}: {path} not found; run `mlma features` for it first")
    return path


def features_mode(data_dir: str | Path, name: str) -> str:
    """"stored" or "on_the_fly", from the dataset's features.json written by ``mlma features``."""
    meta = fbank_dir(data_dir, *parse_dataset(name)) / "features.json"
    if meta.is_file():
        try:
            return json.loads(meta.read_text()).get("mode", "stored")
        except ValueError:
            pass
    return "stored"


def resolve_sources(cfg: DataConfig, stats_cache: Optional[Path] = None) -> List[Source]:
    """Expand ``data.train`` into Sources with their hours and cut counts (one pass over the manifests, cached)."""
    sources: List[Source] = []
    for entry in cfg.train:
        if isinstance(entry, str):
            names, weight = [entry], 1.0
        else:
            names = entry.get("datasets") or [entry["dataset"]]
            names = [names] if isinstance(names, str) else list(names)
            weight = float(entry.get("weight", 1.0))
        for pattern in names:
            for name in expand_dataset_names(cfg.data_dir, pattern):
                _, lang, _ = parse_dataset(name)
                manifest = _manifest_of(cfg.data_dir, name)
                shar = manifest.parent / "shar" if cfg.shar else None
                if shar is not None and not sorted(shar.glob("cuts.*.jsonl.gz")):
                    raise MlmaError(f"dataset {name}: no Shar shards in {shar}; run `mlma features --shar`")
                offline_copies = cfg.speed_perturb and not cfg.speed_perturb_factors
                sources.append(Source(name=name, lang=lang, manifest=manifest, weight=weight,
                                      speed_perturb=offline_copies, shar_dir=shar))
    seen = Counter(s.name for s in sources)
    dup = [n for n, c in seen.items() if c > 1]
    if dup:
        raise ValueError(f"invalid data config: datasets listed more than once: {dup}")
    _fill_stats(sources, stats_cache)
    for s in sources:
        if s.num_cuts == 0:
            raise MlmaError(f"dataset {s.name}: no cuts in {s.manifest}")
    return sources


def _fill_stats(sources: List[Source], cache: Optional[Path]) -> None:
    """Count cuts and hours per source (one pass over the metadata); cached by (manifest, size, mtime, sp)."""
    cached: Dict[str, Any] = {}
    if cache is not None and cache.is_file():
        try:
            cached = json.loads(cache.read_text())
        except ValueError:
            cached = {}
    changed = False
    for s in sources:
        st = s.manifest.stat()
        key = f"{s.manifest.resolve()}|{st.st_size}|{int(st.st_mtime)}|sp={int(s.speed_perturb)}"
        if key not in cached:
            n, secs = 0, 0.0
            for cut in CutSet.from_file(s.manifest):
                if s.speed_perturb or not is_speed_perturbed(cut):
                    n += 1
                    secs += cut.duration
            cached[key] = {"cuts": n, "seconds": secs}
            changed = True
        s.num_cuts = cached[key]["cuts"]
        s.hours = cached[key]["seconds"] / 3600.0
    if cache is not None and changed:
        write_json_atomic(cache, cached)


def temperature_weights(sources: Sequence[Source], alpha: float) -> List[float]:
    """Sampling probability of each source: P(lang) ~ hours(lang)^alpha, shared within a language by hours x weight.

    Returns probabilities summing to 1 (same order as ``sources``).
    """
    lang_hours: Dict[str, float] = {}
    for s in sources:
        lang_hours[s.lang] = lang_hours.get(s.lang, 0.0) + s.hours
    lang_p = {l: h ** alpha for l, h in lang_hours.items()}
    z = sum(lang_p.values())
    raw = [lang_p[s.lang] / z * (s.hours / lang_hours[s.lang]) * s.weight for s in sources]
    total = sum(raw)
    return [r / total for r in raw]


def describe_mixture(sources: Sequence[Source], probs: Sequence[float]) -> str:
    total_cuts = sum(s.num_cuts for s in sources)
    lines = [f"{'dataset':32s} {'lang':4s} {'hours':>8s} {'cuts':>9s} {'p':>7s} {'x/epoch':>8s}"]
    for s, p in zip(sources, probs):
        lines.append(f"{s.name:32s} {s.lang:4s} {s.hours:8.3f} {s.num_cuts:9d} {p:7.3f} "
                     f"{p * total_cuts / s.num_cuts:8.2f}")
    return "\n".join(lines)


class TemperatureMixer:
    """A re-iterable stream of cuts for one epoch, mixing sources with fixed probabilities.

    Args:
        sources: the training sources (their ``cuts()`` are re-opened lazily).
        probs: sampling probability of each source.
        seed: base seed; epoch e uses numpy's generator seeded with (seed, e).
        draws_per_epoch: cuts per epoch (default: the total number of cuts of all sources).
    Call ``set_epoch(e)`` before iterating epoch e (the training loop does, before the sampler's).
    """

    def __init__(self, sources: Sequence[Source], probs: Sequence[float], seed: int,
                 draws_per_epoch: Optional[int] = None):
        self.sources = list(sources)
        self.probs = np.asarray(probs, dtype=np.float64)
        self.seed = seed
        self.draws = draws_per_epoch or sum(s.num_cuts for s in self.sources)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _choices(self, epoch: int) -> np.ndarray:
        if len(self.sources) == 1:
            return np.zeros(self.draws, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch])
        return rng.choice(len(self.sources), size=self.draws, p=self.probs)

    def _offsets(self, epoch: int) -> List[int]:
        """Where each source's cycle stands at the start of ``epoch`` (sum of earlier epochs' draws)."""
        used = np.zeros(len(self.sources), dtype=np.int64)
        for e in range(epoch):
            used += np.bincount(self._choices(e), minlength=len(self.sources))
        return [int(u % s.num_cuts) for u, s in zip(used, self.sources)]

    def __iter__(self) -> Iterator:
        choices = self._choices(self.epoch)
        streams = [_cycle(s.cuts(), off) for s, off in zip(self.sources, self._offsets(self.epoch))]
        for i in choices:
            yield next(streams[i])


def _cycle(cuts: CutSet, offset: int) -> Iterator:
    """Endless iteration over ``cuts`` starting at position ``offset``."""
    while True:
        n = 0
        for n, cut in enumerate(cuts, 1):
            if offset > 0:
                offset -= 1
                continue
            yield cut
        if n == 0:
            return


# ----------------------------------------------------------------------------------------------- filters
def cut_text(cut) -> Tuple[str, Optional[str]]:
    """(transcript, language) of a cut: its supervisions' texts joined; language of the first supervision."""
    sups = cut.supervisions
    text = " ".join(s.text for s in sups if s.text)
    return text, (sups[0].language if sups else None)


def ctc_min_frames(tokens: Sequence[int]) -> int:
    """Frames CTC needs for a label sequence: one per token plus a blank between each repeated pair."""
    repeats = sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    return len(tokens) + repeats


class CutFilter:
    """Predicate for the sampler: keeps cuts that can be trained on; counts and lists the others.

    Args:
        tokenizer: encodes the transcript (normalized inside ``encode``).
        out_frames: maps input frames -> encoder output frames (the model's subsampling arithmetic).
        min_duration, max_duration: allowed cut duration in seconds.
        frame_shift: seconds per input frame (when the cut carries no features yet).
        report: optional TSV path listing each filtered cut once (id, reason, detail).
        max_speed: the fastest on-the-fly speed perturbation; the token check uses the frames the cut has at
            that speed (its shortest version), so no perturbed copy can have fewer frames than CTC needs.
    """

    def __init__(self, tokenizer, out_frames: Callable[[int], int], min_duration: float, max_duration: float,
                 frame_shift: float = 0.01, report: Optional[Path] = None, max_speed: float = 1.0):
        self.tokenizer = tokenizer
        self.max_speed = max_speed
        self.out_frames = out_frames
        self.min_duration = min_duration
        self.max_duration = max_duration
        self.frame_shift = frame_shift
        self.counts: Counter = Counter()
        self.report = report
        self._listed: set = set()

    def __call__(self, cut) -> bool:
        reason = detail = None
        if cut.duration < self.min_duration:
            reason, detail = "too_short", f"{cut.duration:.2f}s < {self.min_duration}s"
        elif cut.duration > self.max_duration:
            reason, detail = "too_long", f"{cut.duration:.2f}s > {self.max_duration}s"
        else:
            text, lang = cut_text(cut)
            tokens = self.tokenizer.encode(text, lang)
            num_frames = cut.num_frames if cut.has_features else int(round(cut.duration / self.frame_shift))
            num_frames = int(num_frames / self.max_speed)
            need, have = ctc_min_frames(tokens), self.out_frames(num_frames)
            if not text.strip() or not tokens:
                reason, detail = "empty_text", ""
            elif need > have:
                reason, detail = "tokens_exceed_frames", f"{need} CTC frames needed, {have} after subsampling"
        if reason is None:
            self.counts["kept"] += 1
            return True
        self.counts[reason] += 1
        if cut.id not in self._listed:
            self._listed.add(cut.id)
            log.debug("filtered %s: %s %s", cut.id, reason, detail)
            if self.report is not None:
                with open(self.report, "a", encoding="utf-8") as f:
                    f.write(f"{cut.id}\t{reason}\t{detail}\n")
        return False

    def summary(self) -> str:
        dropped = {k: v for k, v in self.counts.items() if k != "kept"}
        if not dropped:
            return f"filter: kept all {self.counts['kept']} cuts"
        where = f" (listed in {self.report})" if self.report else ""
        return (f"filter: kept {self.counts['kept']} cuts, dropped " +
                ", ".join(f"{v} {k}" for k, v in sorted(dropped.items())) + where)

    def reset_counts(self) -> None:
        self.counts = Counter()


# ----------------------------------------------------------------------------------------------- batches
class AsrDataset(torch.utils.data.Dataset):
    """Map-style dataset: a CutSet (one sampler batch) -> a padded CTC batch.

    Returns a dict:
        feats: (B, T, F) float, padded with low log-energy;  feat_lens: (B,) int64 frames before padding;
        targets: (sum U,) int64 token ids concatenated;      target_lens: (B,) int64;
        cut_ids, langs, texts: lists of length B;            duration: float, seconds of audio in the batch.

    Args:
        tokenizer: Tokenizer (``encode(text, lang)`` normalizes and adds the language tag when configured).
        input_strategy: lhotse PrecomputedFeatures() or OnTheFlyFeatures(Fbank(...)): cuts -> (feats, lens).
        spec_augment: optional lhotse SpecAugment; its randomness is seeded from (seed, epoch, cut ids) so a
            batch is augmented the same way whether it is loaded in a worker, after a resume or not.
        speed_factors: on-the-fly speed perturbation: each cut plays at one of these speeds, drawn uniformly
            from (seed, epoch, cut id) (needs an input strategy that computes features from the audio).
    """

    def __init__(self, tokenizer, input_strategy, spec_augment=None, seed: int = 0,
                 speed_factors: Optional[Sequence[float]] = None):
        self.tokenizer = tokenizer
        self.input_strategy = input_strategy
        self.spec_augment = spec_augment
        self.seed = seed
        self.speed_factors = list(speed_factors) if speed_factors else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def speed_of(self, cut_id: str) -> float:
        """This epoch's speed for a cut: uniform over ``speed_factors``, the same in any worker or resume."""
        draw = zlib.crc32(f"{self.seed}|{self.epoch}|speed|{cut_id}".encode())
        return self.speed_factors[draw % len(self.speed_factors)]

    def _perturbed(self, cut):
        factor = self.speed_of(cut.id)
        return cut if factor == 1.0 else cut.drop_features().perturb_speed(factor)   # new id: <id>_sp<factor>

    def __getitem__(self, cuts: CutSet) -> Dict[str, Any]:
        if self.speed_factors:
            cuts = CutSet.from_cuts(self._perturbed(c) for c in cuts)
        cuts = cuts.sort_by_duration(ascending=False)
        feats, feat_lens = self.input_strategy(cuts)
        texts, langs, targets = [], [], []
        for cut in cuts:
            text, lang = cut_text(cut)
            texts.append(text)
            langs.append(lang)
            targets.append(torch.tensor(self.tokenizer.encode(text, lang), dtype=torch.int64))
        cut_ids = [c.id for c in cuts]
        if self.spec_augment is not None:
            feats = self._augment(feats, feat_lens, cut_ids)
        return {
            "feats": feats,
            "feat_lens": feat_lens.to(torch.int64),
            "targets": torch.cat(targets) if targets else torch.zeros(0, dtype=torch.int64),
            "target_lens": torch.tensor([len(t) for t in targets], dtype=torch.int64),
            "cut_ids": cut_ids,
            "langs": langs,
            "texts": texts,
            "duration": float(sum(c.duration for c in cuts)),
        }

    def _augment(self, feats: torch.Tensor, feat_lens: torch.Tensor, cut_ids: List[str]) -> torch.Tensor:
        seed = zlib.crc32(f"{self.seed}|{self.epoch}|{'|'.join(cut_ids)}".encode()) & 0x7FFFFFFF
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            # one segment per utterance, covering only its real frames: (B, 3) = (index, start, num_frames)
            segments = torch.stack([torch.arange(len(cut_ids)), torch.zeros(len(cut_ids), dtype=torch.int64),
                                    feat_lens.to(torch.int64)], dim=1).to(torch.int32)
            out = self.spec_augment(feats, supervision_segments=segments)
        random.setstate(py_state)
        np.random.set_state(np_state)
        return out


def input_strategy(cfg: DataConfig, names: Sequence[str] = (), training: bool = False):
    """PrecomputedFeatures, or OnTheFlyFeatures(Fbank) when asked to, when a dataset has no stored features, or
    for training with on-the-fly speed perturbation."""
    mode = cfg.features
    if training and cfg.speed_perturb_factors and mode == "auto":
        log.info("features: computed on the fly because data.speed_perturb_factors=%s changes the audio's speed",
                 cfg.speed_perturb_factors)
        mode = "on-the-fly"
    elif mode == "auto":
        lacking = [n for n in names if features_mode(cfg.data_dir, n) == "on_the_fly"]
        if lacking:
            log.info("features: computed on the fly because %s has no stored features (mlma features --on-the-fly)",
                     ", ".join(lacking))
            mode = "on-the-fly"
    elif mode == "on-the-fly":
        log.info("features: computed on the fly from audio because data.features=on-the-fly")
    if mode == "on-the-fly":
        return OnTheFlyFeatures(fbank_extractor())
    return PrecomputedFeatures()


def spec_augment(cfg: DataConfig):
    if cfg.spec_augment is None:
        return None

    return SpecAugment(**{**DEFAULT_SPEC_AUGMENT, **cfg.spec_augment})


@dataclass
class TrainData:
    """Everything the loop needs to iterate training batches and to checkpoint its position."""

    sources: List[Source]
    probs: List[float]
    mixer: TemperatureMixer
    sampler: Any
    dataset: AsrDataset
    loader: torch.utils.data.DataLoader
    filter: CutFilter

    def set_epoch(self, epoch: int) -> None:
        self.mixer.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def state_dict(self, batches_done: int) -> Dict[str, Any]:
        """Sampler state at the loop's position. DataLoader prefetching moves the sampler ahead of the loop,
        so the number of batches the loop really consumed this epoch replaces the sampler's own count."""
        sd = self.sampler.state_dict()
        epoch = sd["diagnostics"]["current_epoch"]
        stats = sd["diagnostics"]["stats_per_epoch"][epoch]
        stats["kept_batches"], stats["discarded_batches"] = batches_done, 0
        return sd

    def load_state_dict(self, sd: Dict[str, Any]) -> int:
        """Restore the position; returns the epoch. The sampler fast-forwards (reads cut metadata only)."""
        sd = copy.deepcopy(sd)
        epoch = int(sd["epoch"])
        self.mixer.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        self.sampler.load_state_dict(sd)
        return epoch


def build_train_data(cfg: DataConfig, tokenizer, out_frames: Callable[[int], int], seed: int,
                     exp_dir: Optional[Path] = None, is_main: bool = True) -> TrainData:
    """Sources -> mixer -> filter -> DynamicBucketingSampler (sharded by rank) -> DataLoader."""
    sources = resolve_sources(cfg, stats_cache=(exp_dir / "data-stats.json") if exp_dir and is_main else None)
    probs = temperature_weights(sources, cfg.alpha)
    if is_main:
        log.info("training mixture (alpha=%.2f):\n%s", cfg.alpha, describe_mixture(sources, probs))
    mixer = TemperatureMixer(sources, probs, seed=seed)
    report = (exp_dir / "filtered-cuts.tsv") if (exp_dir is not None and is_main) else None
    cut_filter = CutFilter(tokenizer, out_frames, cfg.min_cut_duration, cfg.cut_duration_limit, report=report,
                           max_speed=max(cfg.speed_perturb_factors or [1.0]))
    sampler = DynamicBucketingSampler(
        CutSet(mixer), max_duration=cfg.max_duration, num_buckets=max(1, min(cfg.num_buckets, mixer.draws)), shuffle=True,
        buffer_size=cfg.shuffle_buffer, seed=seed, drop_last=False,
        num_cuts_for_bins_estimate=min(10000, mixer.draws),
    )
    sampler.filter(cut_filter)
    dataset = AsrDataset(tokenizer, input_strategy(cfg, [s.name for s in sources], training=True),
                         spec_augment(cfg), seed=seed, speed_factors=cfg.speed_perturb_factors)
    loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=cfg.num_workers,
                                         persistent_workers=False)
    return TrainData(sources, probs, mixer, sampler, dataset, loader, cut_filter)


def build_dev_loaders(cfg: DataConfig, tokenizer, out_frames: Callable[[int], int]
                      ) -> Dict[str, torch.utils.data.DataLoader]:
    """One loader per dev dataset (no augmentation), sharded by DDP rank."""
    names: List[str] = []
    for pattern in cfg.dev:
        names += expand_dataset_names(cfg.data_dir, pattern)
    loaders = {}
    for name in names:
        path = _manifest_of(cfg.data_dir, name)
        cut_filter = CutFilter(tokenizer, out_frames, 0.0, cfg.cut_duration_limit)
        sampler = DynamicCutSampler(CutSet.from_file(path), max_duration=cfg.max_duration, shuffle=False)
        sampler.filter(cut_filter)
        dataset = AsrDataset(tokenizer, input_strategy(cfg, [name]), spec_augment=None)
        loaders[name] = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None,
                                                    num_workers=min(cfg.num_workers, 2))
    return loaders


def estimate_batches_per_epoch(sources: Sequence[Source], max_duration: float, world_size: int) -> int:
    """Rough batches per epoch per rank (for the progress bar's ETA): epoch audio / max_duration, ~85% full."""
    seconds = sum(s.hours * 3600 for s in sources)
    return max(1, int(seconds / (0.85 * max_duration) / world_size))
