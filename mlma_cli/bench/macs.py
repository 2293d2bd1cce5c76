"""Multiply-add counts of the CTC models per part, by arithmetic on the config (no tracing).

    macs = model_macs(cfg, frames)          # {"frontend": n, "ffn": n, "mixer": n, "conv": n, "head": n}

``frames`` are feature frames (100 per second); the encoder runs at T' = ceil(ceil(frames/2)/2) (ceil(frames/2)
with ``subsampling_factor: 2``). One MAC is a
multiply-add; the selective scan counts 3 per channel, state and step (the decay, the state update, the read-out),
the attention's softmax and the elementwise ops count nothing. Batch 1: multiply by the batch size for more.
Used by the model benchmark to put a MAC ratio beside each time ratio.
"""
from __future__ import annotations

from typing import Dict


def _subsampled(cfg, frames: int) -> int:
    t1 = (frames + 1) // 2
    return (t1 + 1) // 2 if cfg.subsampling_factor == 4 else t1


def frontend_macs(cfg, frames: int) -> int:
    """Two 3x3 Conv2d blocks (stride 2 in frequency; in time, 2 then 2 or 1) and the Linear to d_model."""
    c1, c2 = cfg.subsampling_channels
    t1, f1 = (frames + 1) // 2, (cfg.num_features + 1) // 2
    t2, f2 = _subsampled(cfg, frames), (f1 + 1) // 2
    return t1 * f1 * c1 * 9 + t2 * f2 * c2 * c1 * 9 + t2 * c2 * f2 * cfg.d_model


def mixer_macs(cfg, t: int) -> int:
    """One BiMamba (Mamba-1) mixer over t frames: shared in/out projections, per direction conv, x_proj,
    dt_proj and the scan."""
    if cfg.mixer != "mamba1":
        raise ValueError(f"MACs are counted for the Mamba-1 mixer only, not {cfg.mixer!r}")
    d, e, n, r = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank
    per_direction = e * cfg.d_conv + e * (r + 2 * n) + r * e + 3 * e * n
    return t * (d * 2 * e + e * d + (2 if cfg.bidirectional else 1) * per_direction)


def attention_macs(cfg, t: int) -> int:
    """Relative-position MHSA over t frames: q/k/v and output projections, the (2t-1) position projections, the
    content and position scores (t and 2t-1 keys per query) and the weighted sum of values."""
    d = cfg.d_model
    return t * 4 * d * d + (2 * t - 1) * d * d + t * (t + (2 * t - 1) + t) * d


def layer_macs(cfg, t: int) -> Dict[str, int]:
    """Per layer: the two FFNs, the sequence mixer (BiMamba or attention) and the convolution module."""
    d = cfg.d_model
    mixer = mixer_macs(cfg, t) if cfg.encoder == "conmamba" else attention_macs(cfg, t)
    conv = t * (d * 2 * d + d * cfg.conv_kernel + d * d)
    return {"ffn": 2 * t * 2 * d * cfg.ffn_dim, "mixer": mixer, "conv": conv}


def model_macs(cfg, frames: int) -> Dict[str, int]:
    """MACs of one utterance of ``frames`` feature frames through the whole model, by part (plus "total")."""
    t = _subsampled(cfg, frames)
    per_layer = layer_macs(cfg, t)
    out = {"frontend": frontend_macs(cfg, frames)}
    out.update({k: v * cfg.num_layers for k, v in per_layer.items()})
    out["head"] = t * cfg.d_model * cfg.vocab_size
    out["total"] = sum(out.values())
    return out
