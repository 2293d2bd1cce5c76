"""Model: configuration, Mamba mixers, encoders and the CTC model.

    cfg = named_config("conmamba-tiny", vocab_size=V)
    model = build_model(cfg)
    log_probs, out_lens = model(feats, feat_lens)   # (B, T, F), (B,) -> (B, T', V), (B,)
"""
from mlma_cli.model.config import ModelConfig, named_config, NAMED_SIZES
from mlma_cli.model.ctc import CTCModel, build_model

__all__ = ["ModelConfig", "named_config", "NAMED_SIZES", "CTCModel", "build_model"]
