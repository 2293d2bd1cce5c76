"""CTC model: global CMVN (buffers) -> encoder -> Linear(D, V) -> log-softmax. Blank is id 0."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from mlma_cli.model.config import ModelConfig, check_scan_backend
from mlma_cli.model.encoders import Encoder
from mlma_cli.model.masking import valid_mask


class CTCModel(nn.Module):
    """forward(feats (B, T, F) float, feat_lens (B,) int64) -> (log_probs (B, T', V), out_lens (B,)).

    Global CMVN is stored as buffers (set_cmvn), so a checkpoint carries it and callers pass raw features;
    with ``config.utterance_mean_norm`` each utterance's mean (over its ``feat_lens`` frames) is removed after it.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.register_buffer("cmvn_mean", torch.zeros(cfg.num_features))
        self.register_buffer("cmvn_std", torch.ones(cfg.num_features))
        self.encoder = Encoder(cfg)
        self.ctc_head = nn.Linear(cfg.d_model, cfg.vocab_size)
        if cfg.xavier_init:
            self.xavier_reinit()

    def xavier_reinit(self) -> None:
        """The reference recipe's init: xavier_normal_ on every >1-D parameter of the encoder layers and of the
        Linear that feeds them (SpeechBrain re-initialises its TransformerASR module: input Linear + encoder).

        The convolutional front end (convs and their LayerNorm gains), the final LayerNorm and the CTC head are
        separate modules there and keep PyTorch's defaults here too. Inside the layers this overwrites Mamba's
        A_log / dt_proj / conv initialisations; kept only to reproduce the recipe.
        """
        for module in (self.encoder.frontend.out, self.encoder.layers):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_normal_(p)

    def set_scan_backend(self, backend: str) -> None:
        """Switch every Mamba mixer to scan_backend ``backend`` (config.SCAN_BACKENDS; same weights on either)."""
        self.config.scan_backend = check_scan_backend(backend)
        for m in self.modules():
            if hasattr(m, "scan_backend"):
                m.scan_backend = backend

    def set_cmvn(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Global feature mean and std, each (F,); std is floored at 1e-5."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() != self.config.num_features or std.numel() != self.config.num_features:
            raise ValueError(f"CMVN needs ({self.config.num_features},) mean and std, "
                             f"got {tuple(mean.shape)} and {tuple(std.shape)}")
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std.clamp(min=1e-5))

    def output_lengths(self, feat_lens: torch.Tensor) -> torch.Tensor:
        """Encoder frames for each input length (4x subsampling)."""
        return self.encoder.frontend.output_lengths(feat_lens)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if feats.dim() != 3 or feats.shape[-1] != self.config.num_features:
            raise ValueError(f"feats must be (B, T, {self.config.num_features}), got {tuple(feats.shape)}")
        feat_lens = feat_lens.to(feats.device)
        x = (feats - self.cmvn_mean) / self.cmvn_std  # padded frames are zeroed after this, in the front end
        if self.config.utterance_mean_norm:
            x = x - utterance_mean(x, feat_lens)
        x, out_lens = self.encoder(x, feat_lens)
        return torch.log_softmax(self.ctc_head(x).float(), dim=-1), out_lens


def utterance_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) features, (B,) valid lengths -> (B, 1, F): each utterance's mean over its valid frames."""
    mask = valid_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)           # (B, T, 1)
    return (x * mask).sum(dim=1, keepdim=True) / lengths.clamp(min=1).to(x.dtype)[:, None, None]


def build_model(cfg: ModelConfig) -> CTCModel:
    """The CTC model for a config (see ModelConfig)."""
    return CTCModel(cfg)
