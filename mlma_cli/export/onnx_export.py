"""Export an mlma CTC model (ConMamba with Mamba-1 or Mamba-2 mixers, or Conformer) to ONNX.

    res = export_checkpoint(["exp/epoch-9.pt", "exp/epoch-10.pt"], "exp/onnx", int8=True)
    res.model_path, res.int8_path, res.metadata

The graph is ``x (N, T, 80) float32, x_lens (N,) int64 -> log_probs (N, T', V), log_probs_len (N,) int64`` with
N and T dynamic and the global CMVN inside. It is made with torch.export + torch.onnx's dynamo exporter while
``model.export_scan.onnx_export_scans()`` is active, so each selective scan becomes an ONNX ``Scan`` over time
(standard ops only) and the length-aware bidirectional logic is the same code as in PyTorch.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from mlma_cli import __version__
from mlma_cli.errors import MissingDependencyError, MlmaError
from mlma_cli.export.metadata import build_metadata
from mlma_cli.export.runtime import CONFIG_FILE, INT8_FILE, MODEL_FILE, TOKENIZER_FILE, TOKENS_FILE
from mlma_cli.export.tokens import write_tokens
from mlma_cli.utils.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
DEFAULT_OPSET = 18
MIN_OPSET = 18  # torch.onnx's dynamo exporter writes opset 18 and up (asked for less, it keeps 18)
LOOP_OPS = ("Scan", "Loop")
SUPPORTED = {"conmamba": ("mamba1", "mamba2"), "conformer": None}
# Example input for tracing: two utterances of different lengths, so padding paths are traced too.
_EXAMPLE_LENS = (203, 150)


@dataclass
class ExportResult:
    """What ``export_checkpoint`` wrote. Paths are inside ``out_dir``."""

    out_dir: Path
    model_path: Path
    int8_path: Optional[Path]
    metadata: Dict[str, str]
    loop_nodes: int
    files: List[Path] = field(default_factory=list)


class _OnnxWrapper(torch.nn.Module):
    """Names the graph's inputs x, x_lens (what sherpa-onnx's zipformer-CTC model class feeds)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        return self.model(x, x_lens)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as err:
        raise MissingDependencyError(f"ONNX export needs onnx and onnxscript ({err}): pip install 'mlma[onnx]'") from err


def check_exportable(cfg) -> None:
    """MlmaError unless the configuration is an architecture the exporter knows."""
    if cfg.encoder not in SUPPORTED:
        raise MlmaError(f"cannot export encoder {cfg.encoder!r}: mlma export knows {', '.join(SUPPORTED)}")
    mixers = SUPPORTED[cfg.encoder]
    if mixers is not None and cfg.mixer not in mixers:
        raise MlmaError(f"cannot export mixer {cfg.mixer!r}: mlma export knows {', '.join(mixers)}")


def count_loop_nodes(graph) -> int:
    """Scan / Loop nodes in an onnx GraphProto, subgraphs included."""
    n = 0
    for node in graph.node:
        n += node.op_type in LOOP_OPS
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                n += count_loop_nodes(attr.g)
    return n


def export_model(model: torch.nn.Module, path: PathLike, metadata: Dict[str, str],
                 opset: int = DEFAULT_OPSET) -> int:
    """Export a CTCModel (eval mode, CPU, float32) to ``path`` with ``metadata``; returns its Scan/Loop count.

    Raises MlmaError when the graph has no loop node (the scans would have been unrolled to one length).
    """
    _require_onnx()
    import onnx

    from mlma_cli.model.export_scan import onnx_export_scans

    check_exportable(model.config)
    model = model.float().cpu().eval()
    lens = torch.tensor(_EXAMPLE_LENS, dtype=torch.int64)
    x = torch.randn(len(_EXAMPLE_LENS), int(lens.max()), model.config.num_features)
    dyn = torch.export.Dim.AUTO
    with torch.no_grad(), onnx_export_scans(), _quiet():
        ep = torch.export.export(_OnnxWrapper(model), (x, lens), dynamic_shapes={"x": {0: dyn, 1: dyn},
                                                                               "x_lens": {0: dyn}})
        prog = torch.onnx.export(ep, dynamo=True, opset_version=opset, input_names=["x", "x_lens"],
                                 output_names=["log_probs", "log_probs_len"], verbose=False)
    proto = prog.model_proto
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise MlmaError(f"asked for ONNX opset {opset}, the exporter wrote {got}; pick an opset it supports")
    loops = count_loop_nodes(proto.graph)
    if model.config.encoder == "conmamba" and loops == 0:
        raise MlmaError("ONNX export produced no Scan/Loop node: the scans were unrolled (report this as a bug)")
    _name_dims(proto)
    del proto.metadata_props[:]
    for k, v in metadata.items():
        proto.metadata_props.add(key=k, value=v)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return loops


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints, deprecation warnings and advice logged at WARNING level."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _name_dims(proto) -> None:
    """Readable dynamic dimension names on the graph's inputs and outputs (N, T, T')."""
    names = {("x", 0): "N", ("x", 1): "T", ("x_lens", 0): "N", ("log_probs", 0): "N", ("log_probs", 1): "T_out",
             ("log_probs_len", 0): "N"}
    for value in list(proto.graph.input) + list(proto.graph.output):
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if (value.name, i) in names and not dim.HasField("dim_value"):
                dim.dim_param = names[(value.name, i)]


def _float_mixer_nodes(path: PathLike) -> List[str]:
    """Names of the MatMul/Gemm nodes of a Mamba mixer other than its in_proj (from the exporter's name scopes)."""
    import onnx

    keep = []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes", "")
        if ".mixer" in scopes and "bimamba" in meta.get("pkg.torch.onnx.class_hierarchy", "").lower() \
                and ".in_proj'" not in scopes:
            keep.append(node.name)
    return keep


def quantize_int8(src: PathLike, dst: PathLike) -> Path:
    """Dynamically quantized copy of ``src``: int8 weights (per output channel) of the MatMul / Gemm layers.

    Convolutions stay float (the depthwise convs are tiny; quantizing them too was less accurate). On the mini
    ConMamba, per-channel QInt8 kept the most greedy outputs identical of QInt8 / QUInt8, per-tensor / per-channel.
    Inside a Mamba mixer only ``in_proj`` is quantized: x_proj / dt_proj feed the scan's step size (an error there
    is compounded over every frame by exp(delta * A)) and out_proj reads the scan's output (see `_float_mixer_nodes`).
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise MissingDependencyError("--int8 needs onnxruntime: pip install 'mlma[onnx]'") from err
    import onnx

    with atomic_path(dst) as tmp, _quiet():
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=_float_mixer_nodes(src))
        proto = onnx.load(str(tmp))
        for p in proto.metadata_props:
            if p.key == "is_int8":
                p.value = "1"
        onnx.save_model(proto, str(tmp))
    return Path(dst)


def export_checkpoint(checkpoints: Union[PathLike, Sequence[PathLike]], out_dir: PathLike, int8: bool = False,
                      opset: int = DEFAULT_OPSET, use_averaged: bool = False) -> ExportResult:
    """Export one checkpoint (or the weight average of several, as ``mlma decode``) to ``out_dir``.

    Writes model.onnx (+ model.int8.onnx with ``int8``), tokens.txt, tokenizer.model and config.json.

    Args:
        checkpoints: checkpoint path(s) or model package dir(s) (anything ``load_for_inference`` takes).
        out_dir: the export directory (created).
        int8: also write the dynamically quantized model.
        opset: ONNX opset (>= 18).
        use_averaged: export each checkpoint's running weight average.
    """
    from mlma_cli.checkpoint import load_for_inference

    if opset < MIN_OPSET:
        raise MlmaError(f"--opset {opset}: the exporter writes opset {MIN_OPSET} or newer")
    _require_onnx()
    inf = load_for_inference(checkpoints, device="cpu", use_averaged=use_averaged)
    cfg, tok = inf.config, inf.tokenizer
    check_exportable(cfg)
    if tok.vocab_size != cfg.vocab_size:
        raise MlmaError(f"checkpoint tokenizer has {tok.vocab_size} pieces but the model {cfg.vocab_size} outputs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    langs = _languages(inf.meta)
    meta = build_metadata(model_type=cfg.encoder, mixer=cfg.mixer if cfg.encoder == "conmamba" else "",
                          languages=langs, vocab_size=cfg.vocab_size, lang_tags=tok.lang_tags, version=__version__,
                          num_features=cfg.num_features, subsampling_factor=cfg.subsampling_factor)
    model_path = out / MODEL_FILE
    loops = export_model(inf.model, model_path, meta, opset)
    files = [model_path]
    int8_path = quantize_int8(model_path, out / INT8_FILE) if int8 else None
    if int8_path:
        files.append(int8_path)
    files.append(write_tokens(tok.pieces(), out / TOKENS_FILE))
    with atomic_path(out / TOKENIZER_FILE) as tmp:
        tmp.write_bytes(tok.to_bytes())
    files.append(out / TOKENIZER_FILE)
    write_json_atomic(out / CONFIG_FILE, {
        "model_config": cfg.to_dict(),
        "metadata": meta,
        "export": {"checkpoints": inf.meta.get("paths"), "use_averaged": use_averaged, "opset": opset,
                   "averaging": inf.meta.get("averaging"), "step": inf.meta.get("step"),
                   "int8": bool(int8), "torch": torch.__version__, "loop_nodes": loops},
        "inputs": {"x": "(N, T, 80) float32 raw fbank", "x_lens": "(N,) int64"},
        "outputs": {"log_probs": "(N, T', V) float32", "log_probs_len": "(N,) int64"},
    })
    files.append(out / CONFIG_FILE)
    return ExportResult(out, model_path, int8_path, meta, loops, files)


def _languages(meta: Dict[str, Any]) -> List[str]:
    """Languages of the training sets recorded in the checkpoint's data config (dataset names corpus/lang/split)."""
    from mlma_cli.text.normalize import LANGUAGES

    data = meta.get("data_config") or {}
    found = []
    for spec in list(data.get("train") or []):
        parts = str(spec).split("/")
        langs = LANGUAGES if len(parts) > 1 and parts[1] == "*" else [p for p in parts if p in LANGUAGES][:1]
        found += [lang for lang in langs if lang not in found]
    return sorted(found)
