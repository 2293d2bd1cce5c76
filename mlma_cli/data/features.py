"""``mlma features``: 80-bin fbank (25 ms / 10 ms, 16 kHz) for prepared datasets, plus global CMVN.

Per dataset ``corpus/lang/split`` it writes ``DATA/fbank/<corpus>/<lang>/<split>/``:

- ``cuts.jsonl.gz``: cuts resampled to 16 kHz (training splits optionally also speed-perturbed 0.9/1.1)
  with features in ``feats/`` (lilcom chunked storage); in ``on_the_fly`` mode the cuts carry no features;
- ``shar/`` (``shar=True``): lhotse Shar shards ``cuts.NNNNNN.jsonl.gz`` + ``features.NNNNNN.tar``
  (or ``recording.NNNNNN.tar`` flac audio in on-the-fly mode), read with ``CutSet.from_shar(in_dir=...)``;
- ``features.json``: the feature description, written last; its presence marks the dataset complete.

``features.json``: ``{"mode": "stored"|"on_the_fly", "type": "fbank", "num_mel_bins": 80, "frame_length": 0.025,
"frame_shift": 0.01, "sampling_rate": 16000, "speed_perturb": bool, "shar": "shar"|null, "cuts": n, "dropped": [...]}``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter

from mlma_cli.data.cmvn import CmvnAccumulator, save_cmvn
from mlma_cli.data.corpora import is_training_split
from mlma_cli.data.layout import fbank_dir, find_datasets, manifest_dir, parse_dataset
from mlma_cli.errors import MlmaError
from mlma_cli.utils.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

SAMPLING_RATE = 16000
NUM_MEL_BINS = 80
SPEEDS = (0.9, 1.1)
META = "features.json"


def fbank_extractor() -> Fbank:
    """The one feature extractor of mlma (training, on-the-fly loading and inference)."""
    return Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS, frame_length=0.025, frame_shift=0.01, sampling_rate=SAMPLING_RATE))


def feature_meta(on_the_fly: bool, speed_perturb: bool, shar: bool) -> Dict:
    return {
        "mode": "on_the_fly" if on_the_fly else "stored",
        "type": "fbank",
        "num_mel_bins": NUM_MEL_BINS,
        "frame_length": 0.025,
        "frame_shift": 0.01,
        "sampling_rate": SAMPLING_RATE,
        "speed_perturb": bool(speed_perturb),
        "shar": "shar" if shar else None,
    }


@dataclass
class DatasetFeatures:
    dataset: str
    status: str  # computed | skipped (complete from an earlier run)
    cuts: int
    hours: float
    mode: str
    dropped: int = 0


@dataclass
class FeaturesReport:
    datasets: List[DatasetFeatures] = field(default_factory=list)
    cmvn_path: Optional[Path] = None
    cmvn_frames: int = 0


def compute_features(
    data_dir: str | Path,
    datasets: Optional[Sequence[str]] = None,
    num_jobs: int = 1,
    speed_perturb: bool = False,
    on_the_fly: bool = False,
    shar: bool = False,
    shard_size: int = 1000,
    overwrite: bool = False,
    cmvn_max_cuts: int = 5000,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> FeaturesReport:
    """Compute (or skip when complete) features for ``datasets`` (None = all prepared), then CMVN.

    Speed perturbation applies to training splits (name starts with "train"). CMVN pools at most
    ``cmvn_max_cuts`` cuts (evenly spaced) from all training datasets under ``DATA/fbank``; it is
    recomputed when a training dataset was (re)computed or ``cmvn.json`` is missing.
    ``progress(dataset, done_cuts, total_cuts)`` is called as feature chunks finish.
    """
    if num_jobs < 1 or shard_size < 1:
        raise ValueError("num_jobs and shard_size must be >= 1")
    names = list(datasets) if datasets else find_datasets(data_dir)
    if not names:
        raise MlmaError(f"no prepared dataset under {Path(data_dir) / 'manifests'}; run `mlma prepare` first")
    report = FeaturesReport()
    with _Workers(num_jobs) as workers:
        for name in names:
            report.datasets.append(
                _dataset_features(data_dir, name, workers, speed_perturb, on_the_fly, shar, shard_size, overwrite, progress)
            )
    cmvn_path = Path(data_dir) / "fbank" / "cmvn.json"
    train_changed = any(d.status == "computed" and is_training_split(parse_dataset(d.dataset)[2]) for d in report.datasets)
    if train_changed or not cmvn_path.is_file():
        frames = update_cmvn(data_dir, max_cuts=cmvn_max_cuts)
        if frames:
            report.cmvn_path, report.cmvn_frames = cmvn_path, frames
    elif cmvn_path.is_file():
        report.cmvn_path = cmvn_path
        report.cmvn_frames = int(json.loads(cmvn_path.read_text())["frames"])
    return report


def _dataset_features(
    data_dir, name, workers, speed_perturb, on_the_fly, shar, shard_size, overwrite, progress
) -> DatasetFeatures:
    corpus, lang, split = parse_dataset(name)
    src = Path(manifest_dir(data_dir, corpus, lang, split)) / "cuts.jsonl.gz"
    out = Path(fbank_dir(data_dir, corpus, lang, split))
    perturb = speed_perturb and is_training_split(split)
    want = feature_meta(on_the_fly, perturb, shar)
    meta_path = out / META
    if not src.is_file():
        raise MlmaError(f"{src} not found; run `mlma prepare {corpus}` first (dataset {name})")
    old = _read_meta(meta_path)
    if old is not None and not overwrite:
        if {k: old.get(k) for k in want} != want:
            log.info("%s: earlier features were made with other options; recomputing", name)
        elif src.stat().st_mtime > meta_path.stat().st_mtime:
            log.info("%s: manifests are newer than the features; recomputing", name)
        else:
            log.info("%s: features complete from an earlier run, skipped (--overwrite recomputes)", name)
            return DatasetFeatures(name, "skipped", int(old.get("cuts", 0)), float(old.get("hours", 0.0)), want["mode"])
    for stale in (meta_path, out / "cuts.jsonl.gz"):  # the dataset reads as incomplete until rewritten
        if stale.exists():
            stale.unlink()
    cuts = CutSet.from_file(src).resample(SAMPLING_RATE).to_eager()
    if perturb:
        cuts = cuts + cuts.perturb_speed(SPEEDS[0]) + cuts.perturb_speed(SPEEDS[1])
    dropped: List[str] = []
    if on_the_fly:
        log.info("%s: on-the-fly mode, writing cuts without stored features (fbank computed in the dataloader)", name)
    else:
        report = (lambda done, total: progress(name, done, total)) if progress else None
        cuts, dropped = _store_fbank(cuts, out, workers, report)
    with atomic_path(out / "cuts.jsonl.gz") as tmp:
        cuts.to_file(tmp)
    if shar:
        _write_shar(cuts, out / "shar", on_the_fly, shard_size)
    elif (out / "shar").exists():
        shutil.rmtree(out / "shar")  # left from an earlier --shar run; no longer matches the cuts
    if on_the_fly and (out / "feats").exists():
        shutil.rmtree(out / "feats")
    hours = sum(c.duration for c in cuts) / 3600.0
    write_json_atomic(meta_path, {**want, "cuts": len(cuts), "hours": round(hours, 6), "dropped": dropped})
    return DatasetFeatures(name, "computed", len(cuts), hours, want["mode"], len(dropped))


def _read_meta(path: Path) -> Optional[Dict]:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def _fbank_chunk(cuts: CutSet, storage_path: str, progress: Optional[Callable[[int], None]] = None) -> List:
    """Fbank for a chunk of cuts into one lilcom chunky file; cuts whose audio fails to load are dropped."""
    from lhotse.audio import null_result_on_audio_loading_error

    extractor, done = fbank_extractor(), []
    with LilcomChunkyWriter(storage_path) as storage:
        for i, cut in enumerate(cuts, start=1):
            res = null_result_on_audio_loading_error(cut.compute_and_store_features)(extractor=extractor, storage=storage)
            if res is not None:
                done.append(res)
            if progress and (i % 20 == 0 or i == len(cuts)):
                progress(i)
    return done


def _fbank_worker(cuts: CutSet, storage_path: str) -> List:
    import torch

    torch.set_num_threads(1)  # one process per job; torch's own threads would oversubscribe the cores
    return _fbank_chunk(cuts, storage_path)


class _Workers:
    """A spawn process pool started on first use and shared by all datasets of one run."""

    MIN_CUTS_PER_JOB = 50  # below this, computing in-process beats starting workers

    def __init__(self, num_jobs: int) -> None:
        self.num_jobs, self._pool = num_jobs, None

    def use_for(self, num_cuts: int) -> bool:
        return self.num_jobs > 1 and num_cuts >= self.MIN_CUTS_PER_JOB * 2

    def pool(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.num_jobs, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _store_fbank(cuts: CutSet, out: Path, workers: _Workers, progress: Optional[Callable[[int, int], None]]):
    """Compute features into a temp dir (in-process, or in chunks on the worker pool), rename it to ``feats/``,
    point the cuts at the final path. Returns ``(cuts with features, ids of dropped cuts)``."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".feats.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out / f".feats.tmp{os.getpid()}"
    tmp.mkdir()
    final = out / "feats"
    cut_list = list(cuts)
    done, results = 0, []
    try:
        if not workers.use_for(len(cut_list)):
            tick = (lambda i: progress(i, len(cut_list))) if progress else None
            results.append(_fbank_chunk(cut_list, str(tmp / "feats-0"), tick))
        else:
            from concurrent.futures import as_completed

            n_chunks = min(len(cut_list) // workers.MIN_CUTS_PER_JOB, workers.num_jobs * 8)
            chunks = [CutSet.from_cuts(cut_list[i::n_chunks]) for i in range(n_chunks)]
            pool = workers.pool()
            futures = {pool.submit(_fbank_worker, c, str(tmp / f"feats-{i}")): len(c) for i, c in enumerate(chunks)}
            for fut in as_completed(futures):
                results.append(fut.result())
                done += futures[fut]
                if progress:
                    progress(done, len(cut_list))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    with_feats = {}
    for part in results:
        for cut in part:
            sp = str(cut.features.storage_path)
            cut.features.storage_path = str(final) + sp[len(str(tmp)):] if sp.startswith(str(tmp)) else sp
            with_feats[cut.id] = cut
    dropped = [c.id for c in cut_list if c.id not in with_feats]
    if dropped:
        log.warning("%s: %d cut(s) dropped, audio failed to load: %s", out, len(dropped), " ".join(dropped[:5]))
    if not with_feats:
        raise MlmaError(f"{out}: no cut's audio could be loaded; check the corpus files and rerun `mlma prepare`")
    return CutSet.from_cuts(with_feats[c.id] for c in cut_list if c.id in with_feats), dropped


def _write_shar(cuts: CutSet, shar_dir: Path, on_the_fly: bool, shard_size: int) -> None:
    """Shar shards, written to a temp dir then renamed (features as lilcom, or flac audio when on the fly)."""
    tmp = shar_dir.with_name(f".shar.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fields = {"recording": "flac"} if on_the_fly else {"features": "lilcom"}
    try:
        cuts.to_shar(tmp, fields=fields, shard_size=shard_size, warn_unused_fields=False)
        if shar_dir.exists():
            shutil.rmtree(shar_dir)
        os.replace(tmp, shar_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def update_cmvn(data_dir: str | Path, max_cuts: int = 5000) -> int:
    """Recompute ``DATA/fbank/cmvn.json`` over the complete training datasets; returns frames (0: none)."""
    root = Path(data_dir) / "fbank"
    train = [m.parent for m in sorted(root.glob(f"*/*/*/{META}")) if is_training_split(m.parent.name)]
    if not train:
        log.info("no training dataset with features under %s yet; cmvn.json not written", root)
        return 0
    total = sum(int(json.loads((d / META).read_text()).get("cuts", 0)) for d in train)
    step = max(1, -(-total // max_cuts))
    extractor, acc, used, index = None, CmvnAccumulator(), 0, 0
    for d in train:
        for cut in CutSet.from_jsonl_lazy(d / "cuts.jsonl.gz"):
            index += 1
            if (index - 1) % step:
                continue
            if cut.has_features:
                acc.add(cut.load_features())
            else:
                extractor = extractor or fbank_extractor()
                acc.add(cut.compute_features(extractor))
            used += 1
    names = [d.relative_to(root).as_posix() for d in train]
    save_cmvn(root / "cmvn.json", acc.result(), datasets=names, cuts=used)
    log.info("CMVN over %d frames of %s -> %s", acc.frames, ", ".join(names), root / "cmvn.json")
    return acc.frames
