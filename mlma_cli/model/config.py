"""Model configuration as data: saved inside every checkpoint, so decoding never re-types dimensions."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

ENCODERS = ("conmamba", "conformer")
MIXERS = ("mamba1", "mamba2")
# Fields that define the network (parameter shapes, layer types). The rest (dropout, init ranges, scan chunk
# and backend) may change between a checkpoint and the run that resumes from it.
ARCHITECTURE_FIELDS = ("encoder", "num_features", "vocab_size", "d_model", "num_layers", "ffn_dim",
                       "subsampling_channels", "subsampling_factor", "conv_kernel", "mixer", "d_state", "d_conv", "expand", "dt_rank",
                       "mamba2_headdim", "bidirectional", "num_heads", "utterance_mean_norm")
# Values of scan_backend (model/backends.py chooses the scan for each); check_scan_backend is the one check.
SCAN_BACKENDS = ("auto", "torch", "cuda")
SUBSAMPLING_FACTORS = (2, 4)  # the front end's time subsampling (model/frontend.py)


def check_scan_backend(name: str) -> str:
    """``name`` when it is one of SCAN_BACKENDS, else ValueError."""
    if name not in SCAN_BACKENDS:
        raise ValueError(f"scan_backend={name!r}, expected one of {', '.join(SCAN_BACKENDS)}")
    return name


@dataclass
class ModelConfig:
    """Everything needed to build a CTC model.

    Args:
        encoder: "conmamba" (Conformer with BiMamba instead of self-attention) or "conformer" (baseline).
        num_features: input feature dimension F (80-dim fbank).
        vocab_size: output size V including the CTC blank at id 0.
        d_model: encoder width D.
        num_layers: number of macaron layers N.
        ffn_dim: hidden size of each feed-forward module (4 * D in the reference).
        dropout: dropout used in FFN, ConvModule, front end (and attention for the Conformer).
        frontend_dropout: dropout inside the front end's two Conv2d blocks (None: ``dropout``). Their activations
            hold up to 2,560 values per frame against d_model in the encoder, so on CPU drawing their random
            masks costs more than the whole encoder of a tiny model (a quarter of its training step); 0 skips it.
            The dropout after the front end's Linear stays ``dropout``.
        subsampling_channels: channels of the front end's two Conv2d blocks.
        subsampling_factor: time subsampling of the front end: 4 (40 ms output frames, the reference) or 2 (20 ms:
            twice the encoder frames, for character targets as dense as fast synthetic speech gives, where CTC
            needs a frame per character and a blank between repeats).
        conv_kernel: depthwise kernel of the ConvModule.
        mixer: "mamba1" (selective scan, as ConMamba) or "mamba2" (SSD) for the ConMamba encoder.
        d_state: SSM state size N (16 for Mamba-1; Mamba-2 commonly uses 64).
        d_conv: kernel of Mamba's causal depthwise conv.
        expand: d_inner = expand * d_model.
        dt_rank: rank of the delta projection; None -> ceil(d_model / 16).
        dt_min, dt_max, dt_init_floor: delta initialisation range (log-uniform) and floor.
        mamba2_headdim: head dimension P of the Mamba-2 mixer (d_inner must be divisible by it).
        mamba2_chunk_size: chunk length of the SSD scan.
        bidirectional: BiMamba (forward + length-aware backward) when True.
        scan_backend: "auto" (mamba-ssm kernels when importable and on CUDA, else torch), "torch" or "cuda".
        num_heads: attention heads of the Conformer baseline.
        xavier_init: re-initialise the encoder layers' (and their input Linear's) >1-D weights with Xavier like
            the reference recipe; front-end convs, norms and the CTC head keep their defaults (off by default:
            it overwrites the Mamba-specific initialisations).
        utterance_mean_norm: after the global CMVN, subtract each utterance's mean feature vector (over its valid
            frames). A recording's gain is an additive constant on log-mel features, so this makes the model
            blind to the level of a recording (Kaldi's per-utterance CMN; ESPnet's utterance_mvn, means only).
    """

    encoder: str = "conmamba"
    num_features: int = 80
    vocab_size: int = 500
    d_model: int = 256
    num_layers: int = 18
    ffn_dim: int = 1024
    dropout: float = 0.1
    frontend_dropout: Optional[float] = None
    subsampling_channels: Tuple[int, int] = (64, 32)
    subsampling_factor: int = 4
    conv_kernel: int = 31
    mixer: str = "mamba1"
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: Optional[int] = None
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    mamba2_headdim: int = 64
    mamba2_chunk_size: int = 64
    bidirectional: bool = True
    scan_backend: str = "auto"
    num_heads: int = 4
    xavier_init: bool = False
    utterance_mean_norm: bool = False

    def __post_init__(self) -> None:
        self.subsampling_channels = tuple(self.subsampling_channels)  # YAML/JSON give lists
        if self.dt_rank is None:
            self.dt_rank = math.ceil(self.d_model / 16)
        self.validate()

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"invalid model config: {msg}")

        if self.encoder not in ENCODERS:
            bad(f"encoder={self.encoder!r}, expected one of {ENCODERS}")
        if self.mixer not in MIXERS:
            bad(f"mixer={self.mixer!r}, expected one of {MIXERS}")
        try:
            check_scan_backend(self.scan_backend)
        except ValueError as err:
            bad(str(err))
        for name in ("num_features", "vocab_size", "d_model", "num_layers", "ffn_dim", "d_state", "d_conv",
                     "expand", "dt_rank", "num_heads", "mamba2_headdim", "mamba2_chunk_size"):
            if getattr(self, name) < 1:
                bad(f"{name}={getattr(self, name)} must be >= 1")
        if self.vocab_size < 2:
            bad("vocab_size must be >= 2 (blank + at least one token)")
        for name in ("dropout", "frontend_dropout"):
            p = getattr(self, name)
            if p is not None and not 0.0 <= p < 1.0:
                bad(f"{name}={p} must be in [0, 1)")
        if self.conv_kernel % 2 == 0:
            bad(f"conv_kernel={self.conv_kernel} must be odd for 'same' padding")
        if len(self.subsampling_channels) != 2:
            bad("subsampling_channels must hold two channel counts")
        if self.subsampling_factor not in SUBSAMPLING_FACTORS:
            bad(f"subsampling_factor={self.subsampling_factor}, expected one of {SUBSAMPLING_FACTORS}")
        if self.encoder == "conformer" and self.d_model % self.num_heads:
            bad(f"d_model={self.d_model} not divisible by num_heads={self.num_heads}")
        if self.encoder == "conmamba" and self.mixer == "mamba2" and self.d_inner % self.mamba2_headdim:
            bad(f"d_inner={self.d_inner} not divisible by mamba2_headdim={self.mamba2_headdim}")
        if not 0 < self.dt_min <= self.dt_max:
            bad("need 0 < dt_min <= dt_max")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["subsampling_channels"] = list(self.subsampling_channels)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"invalid model config: unknown keys {unknown}")
        return cls(**d)


# Named sizes. "paper" sizes follow the ConMamba CTC recipe (18 x 256, FFN 1024); with its 31 characters they have
# 31,555,519 (ConMamba, reference ~31.6 M) and 28,799,935 (Conformer, reference ~28.8 M) parameters
# (`mlma model-info conmamba-paper --vocab-size 31` lists them per component; tests/test_model.py checks them).
NAMED_SIZES: Dict[str, Dict[str, Any]] = {
    "conmamba-paper": dict(encoder="conmamba", d_model=256, num_layers=18, ffn_dim=1024),
    "conformer-paper": dict(encoder="conformer", d_model=256, num_layers=18, ffn_dim=1024, num_heads=4),
    "conmamba-small": dict(encoder="conmamba", d_model=144, num_layers=8, ffn_dim=576),
    "conformer-small": dict(encoder="conformer", d_model=144, num_layers=8, ffn_dim=576, num_heads=4),
    "conmamba-tiny": dict(encoder="conmamba", d_model=96, num_layers=4, ffn_dim=384, dropout=0.1),
    "conformer-tiny": dict(encoder="conformer", d_model=96, num_layers=4, ffn_dim=384, num_heads=4, dropout=0.1),
}


def named_config(name: str, **overrides: Any) -> ModelConfig:
    """Build a named size, e.g. named_config("conmamba-tiny", vocab_size=256)."""
    if name not in NAMED_SIZES:
        raise ValueError(f"unknown model size {name!r}; choose from {sorted(NAMED_SIZES)}")
    return ModelConfig(**{**NAMED_SIZES[name], **overrides})
