"""mlma's Python API: load a trained model (checkpoint, package, hf: spec or ONNX export) and transcribe audio.

    import mlma
    model = mlma.load("exp/conmamba_tiny/package")          # .pt, package dir, hf:ORG/NAME, ONNX export dir / .onnx
    results = model.transcribe(["a.wav", samples_16k, (samples, 8000)], batch_size=8, language=None)
    r = results[0]; r.text, r.language, r.tokens[0].start, r.words

Importing this package never imports torch: the torch backend loads it when a checkpoint / package is loaded, and an
ONNX export runs with onnxruntime, numpy, kaldi-native-fbank and sentencepiece only.
Results are `mlma_cli.decode.results` dataclasses (torch-free), re-exported here as Result, Segment, Word, Token.
"""
from __future__ import annotations

from mlma.api import Model, load

__all__ = ["load", "Model", "Result", "Segment", "Word", "Token", "MlmaError", "SAMPLE_RATE"]
SAMPLE_RATE = 16000


def __getattr__(name: str):
    # lazy: the result dataclasses and the error type live in mlma_cli (torch-free modules)
    if name in ("Result", "Transcript", "Segment", "Word", "Token"):
        from mlma_cli.decode import results

        return getattr(results, "Transcript" if name == "Result" else name)
    if name == "MlmaError":
        from mlma_cli.errors import MlmaError

        return MlmaError
    raise AttributeError(f"module 'mlma' has no attribute {name!r}")
