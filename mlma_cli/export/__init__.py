"""ONNX export and torch-free ONNX inference of mlma CTC models.

An export directory (``mlma export --out DIR``) holds::

    model.onnx           x (N, T, 80) float32 raw fbank, x_lens (N,) int64
                         -> log_probs (N, T', V) float32 CTC log-probabilities, log_probs_len (N,) int64
                         (global CMVN inside, dynamic N and T, the selective scans as ONNX Scan loops)
    model.int8.onnx      the same, weights dynamically quantized (--int8)
    tokens.txt           sherpa-onnx symbol table: "<piece> <id>" per line, <blk> is 0
    tokenizer.model      the SentencePiece model
    config.json          model configuration, export settings and metadata

Modules: ``metadata`` (ONNX metadata_props), ``tokens`` (tokens.txt), ``runtime`` (onnxruntime inference without
torch: ``OnnxCtcModel``, ``compute_fbank``), ``onnx_export`` (torch side: ``export_checkpoint``), ``parity``
(PyTorch vs onnxruntime comparison). Only ``onnx_export`` and ``parity`` import torch.
"""
