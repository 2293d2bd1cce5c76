"""Training configuration as data: three dataclasses loaded from one YAML file.

A training YAML has three sections::

    model:                       # a named size plus overrides, or every ModelConfig field spelled out
      name: conmamba-tiny
      dropout: 0.1
    data:                        # DataConfig: what to read and how to batch it
      data_dir: data
      tokenizer: data/lang/tokenizer.model
      train:                     # datasets "<corpus>/<lang>/<split>" ('*' globs allowed), or groups
        - synthetic/*/train
        - {datasets: [commonvoice/nl/train, fleurs/nl/train], weight: 2.0}
      dev: [synthetic/*/dev]
      alpha: 0.5                 # language sampling p(lang) ~ hours(lang) ** alpha
      max_duration: 100
    train:                       # TrainConfig: optimisation, schedule, checkpoints, logging
      exp_dir: exp/tiny
      lr: 1.0e-3
      warmup_steps: 7500

``load_config(path, overrides=["train.lr=5e-4", "data.alpha=0.3"])`` applies ``--set`` overrides (values parsed
as YAML) and validates everything early (ValueError naming the bad key).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from mlma_cli.errors import MlmaError
from mlma_cli.model.config import ModelConfig, named_config

LR_SCHEDULES = ("noam", "cosine")  # train/optim.py: lr_factor

FEATURE_MODES = ("auto", "precomputed", "on-the-fly")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# The reference recipe's SpecAugment: 1-5 time masks up to 12 frames wide, 1-3 frequency masks up to 20 bins.
DEFAULT_SPEC_AUGMENT: Dict[str, Any] = dict(
    time_warp_factor=0, num_frame_masks=5, frames_mask_size=12, max_frames_mask_fraction=0.15,
    num_feature_masks=3, features_mask_size=20, p=0.9,
)


@dataclass
class DataConfig:
    """What to train on and how to batch it.

    Args:
        data_dir: the DATA directory written by ``mlma prepare`` / ``mlma features``.
        tokenizer: SentencePiece model written by ``mlma tokenizer``; default ``<data_dir>/lang/tokenizer.model``.
        cmvn: global CMVN stats JSON; default ``<data_dir>/fbank/cmvn.json`` (skipped with a warning if absent).
        train: training sources. Each entry is a dataset name ``corpus/lang/split`` (``*`` globs over the
            fbank directory), or a dict ``{datasets: [...] | dataset: ..., weight: w}``; ``weight`` multiplies
            the temperature-based sampling probability of that source (default 1).
        dev: dev datasets (names or globs); validation reports loss and WER/CER per language.
        alpha: temperature exponent: language l is sampled with probability ~ hours(l) ** alpha
            (1 = natural distribution, 0 = uniform over languages). Sources of one language share its
            probability in proportion to their hours.
        max_duration: seconds of audio per batch (per GPU) for the dynamic bucketing sampler.
        num_buckets: duration buckets of the sampler.
        shuffle_buffer: cuts held by the bucketing sampler (its shuffling reach).
        min_cut_duration / max_cut_duration: cuts outside [min, max] seconds are filtered (and counted);
            max_cut_duration null = min(30, max_duration).
        speed_perturb: also train on the speed-perturbed copies (ids ``*_sp0.9`` / ``*_sp1.1``) that
            ``mlma features --speed-perturb`` puts in the manifest; false drops them.
        speed_perturb_factors: on-the-fly speed perturbation instead (the ConMamba reference's
            ``[0.95, 1.0, 1.05]``): every epoch each training cut plays at a speed drawn uniformly from these
            factors (seeded by seed, epoch and cut id, so resumes and workers agree). Needs the audio: features
            are then computed on the fly, and the offline copies are not used. null (default) = off.
        features: "auto" (stored features, or on-the-fly for datasets made with ``mlma features --on-the-fly``),
            "precomputed", or "on-the-fly" (Fbank computed from audio in the data loader).
        shar: read training cuts from the lhotse Shar shards ``DATA/fbank/<corpus>/<lang>/<split>/shar/``
            written by ``mlma features --shar`` (sequential reads for large corpora).
        spec_augment: lhotse SpecAugment arguments; null disables SpecAugment.
        num_workers: DataLoader workers (0 = load in the training process).
    """

    data_dir: str = "data"
    tokenizer: Optional[str] = None
    cmvn: Optional[str] = None
    train: List[Union[str, Dict[str, Any]]] = field(default_factory=list)
    dev: List[str] = field(default_factory=list)
    alpha: float = 0.5
    max_duration: float = 100.0
    num_buckets: int = 10
    shuffle_buffer: int = 20000
    min_cut_duration: float = 0.3
    max_cut_duration: Optional[float] = None
    speed_perturb: bool = True
    speed_perturb_factors: Optional[List[float]] = None
    features: str = "auto"
    shar: bool = False
    spec_augment: Optional[Dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_SPEC_AUGMENT))
    num_workers: int = 0

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.tokenizer) if self.tokenizer else Path(self.data_dir) / "lang" / "tokenizer.model"

    @property
    def cut_duration_limit(self) -> float:
        """Longest cut kept for training: max_cut_duration, by default min(30 s, max_duration)."""
        return self.max_cut_duration if self.max_cut_duration is not None else min(30.0, self.max_duration)

    @property
    def cmvn_path(self) -> Path:
        return Path(self.cmvn) if self.cmvn else Path(self.data_dir) / "fbank" / "cmvn.json"

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"invalid data config: {msg}")

        if not self.train:
            bad("data.train lists no training datasets")
        for entry in self.train:
            if isinstance(entry, str):
                continue
            if not isinstance(entry, dict) or not ({"dataset", "datasets"} & set(entry)):
                bad(f"train entry {entry!r} must be a dataset name or a dict with 'dataset' or 'datasets'")
            unknown = set(entry) - {"dataset", "datasets", "weight"}
            if unknown:
                bad(f"train entry {entry!r} has unknown keys {sorted(unknown)}")
            if float(entry.get("weight", 1.0)) <= 0:
                bad(f"train entry {entry!r}: weight must be > 0")
        if not 0.0 <= self.alpha <= 1.0:
            bad(f"alpha={self.alpha} must be in [0, 1]")
        if self.max_duration <= 0:
            bad(f"max_duration={self.max_duration} must be > 0")
        if self.num_buckets < 1:
            bad(f"num_buckets={self.num_buckets} must be >= 1")
        if not 0 <= self.min_cut_duration < self.cut_duration_limit:
            bad("need 0 <= min_cut_duration < max_cut_duration")
        if self.max_cut_duration is not None and self.max_cut_duration > self.max_duration:
            bad(f"max_cut_duration={self.max_cut_duration} exceeds max_duration={self.max_duration}: "
                "such cuts could never fit in a batch")
        if self.features not in FEATURE_MODES:
            bad(f"features={self.features!r}, expected one of {FEATURE_MODES}")
        if self.speed_perturb_factors is not None:
            factors = self.speed_perturb_factors
            if not isinstance(factors, list) or not factors or not all(
                    isinstance(f, (int, float)) and 0.5 <= f <= 2.0 for f in factors):
                bad(f"speed_perturb_factors={factors!r}: a list of speeds in [0.5, 2], e.g. [0.95, 1.0, 1.05]")
            if self.features == "precomputed":
                bad("speed_perturb_factors needs the audio: set data.features to auto or on-the-fly")
        if self.spec_augment is not None:
            unknown = set(self.spec_augment) - set(DEFAULT_SPEC_AUGMENT)
            if unknown:
                bad(f"spec_augment has unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_SPEC_AUGMENT)}")
        if self.num_workers < 0:
            bad("num_workers must be >= 0")


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpointing and logging.

    Args:
        exp_dir: where checkpoints, logs, metrics.jsonl, TensorBoard events and curves go.
        seed: seeds python/numpy/torch and the data order.
        device: "auto" (cuda when available), "cpu", "cuda" or "cuda:N" (under torchrun, LOCAL_RANK decides).
        dtype: "auto" = bfloat16 autocast on CUDA, float32 on CPU; or force float32 / bfloat16 / float16.
        compile: wrap the model in torch.compile.
        threads: torch intra-op CPU threads (None: torch's default, one per core). On a busy CPU machine 1-2
            threads per process avoid oversubscription, which can slow training 10x.
        lr: peak learning rate reached at the end of warmup.
        betas, weight_decay: AdamW; biases, norms and parameters marked ``_no_weight_decay`` get no decay.
        lr_schedule: "noam" (linear warmup, then lr * sqrt(warmup_steps / step)) or "cosine" (linear warmup, then a
            half cosine to 0 at max_steps, which it needs: for short fixed budgets such as the mini recipe).
        warmup_steps: optimizer steps of the linear warmup to ``lr``.
        grad_clip: max global gradient norm (0 disables clipping).
        accum_grad: batches per optimizer step.
        max_epochs: epochs to train (an epoch is one temperature-sampled pass, see ``train/data.py``).
        max_steps: stop after this many optimizer steps (None: run max_epochs).
        log_every: optimizer steps between training log lines / metrics records.
        valid_every: optimizer steps between validations (0: only at the end of each epoch).
        checkpoint_every: optimizer steps between checkpoints (0: only at epoch ends).
        keep_last: how many step checkpoints to keep (epoch checkpoints are all kept).
        average_every: update the running weight average every this many steps (icefall-style model_avg).
        max_bad_batches: stop after this many consecutive skipped batches (NaN/inf loss or OOM).
        valid_max_batches: cap validation batches per dev set (None: whole dev set).
        progress: show the rich progress bar (rank 0).
    """

    exp_dir: str = "exp/mlma"
    seed: int = 42
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    threads: Optional[int] = None
    lr: float = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 5e-4
    eps: float = 1e-8
    lr_schedule: str = "noam"
    warmup_steps: int = 7500
    grad_clip: float = 5.0
    accum_grad: int = 1
    max_epochs: int = 50
    max_steps: Optional[int] = None
    log_every: int = 50
    valid_every: int = 1000
    checkpoint_every: int = 2000
    keep_last: int = 5
    average_every: int = 100
    max_bad_batches: int = 20
    valid_max_batches: Optional[int] = None
    progress: bool = True

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"invalid train config: {msg}")

        if self.dtype not in DTYPES:
            bad(f"dtype={self.dtype!r}, expected one of {DTYPES}")
        if self.lr <= 0:
            bad(f"lr={self.lr} must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            bad(f"betas={self.betas} must be two numbers in [0, 1)")
        if self.weight_decay < 0:
            bad("weight_decay must be >= 0")
        for name in ("warmup_steps", "accum_grad", "max_epochs", "log_every", "keep_last", "average_every",
                     "max_bad_batches"):
            if getattr(self, name) < 1:
                bad(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("valid_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                bad(f"{name} must be >= 0")
        if self.grad_clip < 0:
            bad("grad_clip must be >= 0")
        if self.threads is not None and self.threads < 1:
            bad("threads must be >= 1 (or null)")
        if self.max_steps is not None and self.max_steps < 1:
            bad("max_steps must be >= 1 (or null)")
        if self.lr_schedule not in LR_SCHEDULES:
            bad(f"lr_schedule={self.lr_schedule!r}, expected one of {LR_SCHEDULES}")
        if self.lr_schedule == "cosine" and self.max_steps is None:
            bad("lr_schedule=cosine anneals to 0 at max_steps: set train.max_steps")


@dataclass
class Config:
    """The whole experiment: ``model`` (a dict: ``name`` of a named size plus overrides, or ModelConfig fields;
    vocab_size is taken from the tokenizer), ``data`` and ``train``."""

    model: Dict[str, Any] = field(default_factory=lambda: {"name": "conmamba-tiny"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if not isinstance(self.model, dict):
            raise ValueError("invalid model config: 'model' must be a mapping")
        check_model_section(self.model)
        self.data.validate()
        self.train.validate()

    def to_dict(self) -> Dict[str, Any]:
        return {"model": dict(self.model), "data": dataclasses.asdict(self.data),
                "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Config":
        unknown = set(d) - {"model", "data", "train"}
        if unknown:
            raise ValueError(f"invalid config: unknown top-level sections {sorted(unknown)}; "
                             "expected model, data, train")
        cfg = cls(model=dict(d.get("model") or {"name": "conmamba-tiny"}),
                  data=_dataclass_from_dict(DataConfig, d.get("data") or {}, "data"),
                  train=_dataclass_from_dict(TrainConfig, d.get("train") or {}, "train"))
        cfg.validate()
        return cfg


# Alternative spellings accepted in YAML and --set.
ALIASES = {"save_every": "checkpoint_every"}


def _dataclass_from_dict(cls, d: Dict[str, Any], section: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    d = {ALIASES.get(k, k) if ALIASES.get(k) in fields else k: v for k, v in d.items()}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"invalid {section} config: unknown keys {unknown}; known: {sorted(fields)}")
    return cls(**{k: _coerce(v, str(fields[k].type), f"{section}.{k}") for k, v in d.items()})


def _coerce(value: Any, annotation: str, key: str) -> Any:
    """YAML reads ``5e-4`` as a string and ``1`` as an int: convert scalars to the field's declared number type."""
    if value is None or isinstance(value, bool):
        return value
    try:
        if annotation.startswith("List[float]") and isinstance(value, list):
            return [float(v) for v in value]
        if "float" in annotation and not annotation.startswith("List") and isinstance(value, (str, int)):
            return float(value)
        if "int" in annotation and isinstance(value, str):
            return int(value)
    except ValueError:
        raise ValueError(f"invalid config: {key}={value!r} is not a number") from None
    return value


def apply_overrides(d: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``key=value`` overrides (value parsed as YAML) to a nested config dict, in place.

    ``key`` is ``section.name`` (``train.lr``, ``data.alpha``, ``model.num_layers``) or a bare field name of the
    data or train section (``max_steps``, ``alpha``).
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. train.lr=5e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) == 1:
            parts = [_section_of(parts[0], item), parts[0]]
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return d


def _section_of(name: str, item: str) -> str:
    name = ALIASES.get(name, name)
    sections = [sec for sec, cls in (("data", DataConfig), ("train", TrainConfig))
                if name in {f.name for f in dataclasses.fields(cls)}]
    if not sections:
        raise ValueError(f"--set {item!r}: {name} is no data or train field; use section.key (e.g. model.{name})")
    return sections[0]


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or start from the defaults when ``path`` is None) and apply ``--set`` overrides."""
    d: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MlmaError(f"config file {path} not found")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ValueError(f"{path}: not valid YAML{where} ({problem}); fix the file") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a mapping with sections model, data, train")
    apply_overrides(d, overrides)
    try:
        return Config.from_dict(d)
    except ValueError as err:
        raise ValueError(f"{path}: {err}" if path is not None else str(err)) from None


def check_model_section(model: Dict[str, Any]) -> None:
    """Reject a bad ``model`` section (unknown size or key, d_model not divisible by heads ...) before training
    creates anything; the real vocabulary size comes from the tokenizer later."""
    probe = dict(model)
    try:
        resolve_model_config(probe, probe.get("vocab_size", 64), probe.get("num_features", 80))
    except TypeError as err:  # ModelConfig(**keys) with a key it does not have
        known = sorted(f.name for f in dataclasses.fields(_model_config_class()))
        bad = str(err).rsplit("argument", 1)[-1].strip(" '")
        raise ValueError(f"invalid model config: unknown key {bad!r}; known: {known}") from None
    except ValueError as err:
        msg = str(err)
        raise ValueError(msg if msg.startswith("invalid model config") else f"invalid model config: {msg}") from None


def _model_config_class():
    return ModelConfig


def resolve_model_config(model: Dict[str, Any], vocab_size: int, num_features: int):
    """Turn the ``model`` section into a ModelConfig; ``vocab_size`` comes from the tokenizer.

    ``{"name": "conmamba-tiny", "dropout": 0.2}`` -> named size with overrides; without ``name`` every key is a
    ModelConfig field.
    """
    model = dict(model)
    name = model.pop("name", None)
    model.setdefault("vocab_size", vocab_size)
    model.setdefault("num_features", num_features)
    if model["vocab_size"] != vocab_size:
        raise ValueError(f"invalid model config: vocab_size={model['vocab_size']} but the tokenizer has {vocab_size}")
    if name is not None:
        return named_config(name, **model)
    return ModelConfig.from_dict(model)
