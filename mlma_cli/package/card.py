"""The package's README.md: a Hugging Face model card (YAML front matter, then what the model is and how to use it).

Everything comes from the package's config.json dict (see ``pack.package_config``) and, optionally, the
report.json of ``mlma report`` (``{"cells": [{"lang", "testset", "setting", "wer", ["cer"]}], ...}``).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from mlma_cli.package.load import ONNX_DIR

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "nl": "Dutch"}
_ARCH_TAGS = {"conmamba": ["mamba", "conmamba", "conformer"], "conformer": ["conformer"]}


def front_matter(cfg: Dict[str, Any], license: str, onnx: bool) -> List[str]:
    """The YAML header the Hub reads (license, language, tags, library_name, pipeline_tag); JSON-quoted scalars."""
    encoder = cfg["model_config"].get("encoder", "")
    tags = ["automatic-speech-recognition", "ctc", *_ARCH_TAGS.get(encoder, [encoder]), "multilingual", "mlma"]
    if onnx:
        tags += ["onnx", "sherpa-onnx"]
    lines = ["---", f"license: {license}"]
    if cfg.get("languages"):
        lines += ["language:"] + [f"- {lang}" for lang in cfg["languages"]]
    lines += ["tags:"] + [f"- {t}" for t in dict.fromkeys(tags)]
    lines += ["library_name: mlma", "pipeline_tag: automatic-speech-recognition", "---"]
    return lines


def results_table(report: Dict[str, Any]) -> List[str]:
    """Language x test-set table of WER (and CER when the report has it) from a report.json dict."""
    cells = report.get("cells") or []
    sets = sorted({c["testset"] for c in cells})
    langs = sorted({c["lang"] for c in cells})
    table = {(c["lang"], c["testset"]): c for c in cells}
    has_cer = any("cer" in c for c in cells)
    # `mlma report` keeps each cell's best setting: mark cells by setting when they differ
    settings = sorted({c.get("setting", "") for c in cells} - {""})
    mark = {st: f" [{i + 1}]" for i, st in enumerate(settings)} if len(settings) > 1 else {}

    def cell(lang: str, s: str) -> str:
        c = table.get((lang, s))
        if c is None:
            return "-"
        return (f"{c['wer']:.2f}" + (f" / {c['cer']:.2f}" if has_cer and "cer" in c else "")
                + mark.get(c.get("setting", ""), ""))

    what = "WER / CER (%)" if has_cer else "WER (%)"
    out = [f"{what} per language and test set:", "", "| language | " + " | ".join(sets) + " |",
           "|---|" + "---|" * len(sets)]
    out += [f"| {lang} | " + " | ".join(cell(lang, s) for s in sets) + " |" for lang in langs]
    if mark:
        out += ["", "Decoding (the best setting per cell): " + "; ".join(f"[{i + 1}] `{st}`"
                                                                         for i, st in enumerate(settings)) + "."]
    elif settings:
        out += ["", f"Decoding: `{settings[0]}`."]
    return out


def _datasets(entries) -> List[str]:
    out = []
    for e in entries or []:
        if isinstance(e, dict):
            names = e.get("datasets") or [e.get("dataset")]
            out += [f"{n} (weight {e.get('weight', 1)})" for n in names if n]
        else:
            out.append(str(e))
    return out


def training_lines(cfg: Dict[str, Any]) -> List[str]:
    data, train = cfg.get("data_config") or {}, cfg.get("train_config") or {}
    out = []
    if data.get("train"):
        out.append("- Training sets: " + ", ".join(f"`{d}`" for d in _datasets(data["train"])))
    if data.get("dev"):
        out.append("- Dev sets: " + ", ".join(f"`{d}`" for d in _datasets(data["dev"])))
    if "alpha" in data:
        out.append(f"- Language sampling: probability ~ hours^{data['alpha']}")
    if cfg.get("step") is not None:
        out.append(f"- Trained for {cfg['step']} steps ({cfg.get('epoch')} epochs started)")
    opt = {k: train[k] for k in ("lr", "warmup_steps", "max_steps", "max_epochs", "weight_decay") if k in train}
    if opt:
        out.append("- Optimiser: AdamW + Noam warmup, " + ", ".join(f"{k} {v}" for k, v in opt.items()))
    if cfg.get("averaged_from"):
        out.append(f"- Weights: {cfg.get('averaging') or 'average'} of " + ", ".join(
            f"`{p}`" for p in cfg["averaged_from"]))
    elif cfg.get("use_averaged"):
        out.append(f"- Weights: the running average over {cfg.get('num_averaged')} steps")
    return out or ["- Not recorded in the checkpoint."]


def usage_lines(name: str, onnx: bool) -> List[str]:
    spec = f"hf:{name}" if "/" in name else "PATH/TO/THIS/DIR"
    out = ["```bash", f"mlma transcribe --checkpoint {spec} audio.wav",
           f"mlma decode --checkpoint {spec} --data-dir data --test-sets 'fleurs/*/test'", "```", "",
           "Python API:", "", "```python", "import mlma", "",
           f'model = mlma.load("{spec}")', 'result = model.transcribe(["audio.wav"])[0]',
           "print(result.text, [(t.text, t.start, t.end) for t in result.tokens])", "```"]
    if onnx:
        out += ["", f"ONNX (no torch needed): `mlma.load(\"{spec}/{ONNX_DIR}\")`, or sherpa-onnx's offline CTC recognizer:",
                "", "```bash",
                f"sherpa-onnx-offline --tokens={ONNX_DIR}/tokens.txt --zipformer-ctc-model={ONNX_DIR}/model.onnx audio.wav",
                "```"]
    return out


def model_card(cfg: Dict[str, Any], name: str, license: str = "apache-2.0",
               report: Optional[Dict[str, Any]] = None, onnx: bool = False) -> str:
    """README.md text for a package whose config.json is ``cfg``."""
    mc = cfg["model_config"]
    langs = cfg.get("languages") or []
    encoder = mc.get("encoder")
    if encoder == "conmamba":
        arch = (f"ConMamba encoder (Conformer with a length-aware bidirectional Mamba block, mixer "
                f"`{mc.get('mixer')}`, d_state {mc.get('d_state')}) instead of self-attention")
    else:
        arch = f"Conformer encoder with relative-position self-attention ({mc.get('num_heads')} heads)"
    lines = front_matter(cfg, license, onnx) + [
        "", f"# {name}", "",
        f"Multilingual CTC speech recognition, trained with the mlma toolkit (this card was written by `mlma pack`).",
        "", "## Model", "",
        "- Languages: " + (", ".join(f"{LANGUAGE_NAMES.get(l, l)} (`{l}`)" for l in langs) or "not recorded"),
        f"- Parameters: {cfg.get('num_parameters', 0) / 1e6:.2f} M",
        f"- Architecture: {arch}; {mc.get('num_layers')} layers, d_model {mc.get('d_model')}, FFN {mc.get('ffn_dim')}",
        f"- Front end: {mc.get('num_features')}-bin log-mel fbank at {cfg.get('sample_rate')} Hz (25 ms / 10 ms), "
        "global CMVN inside the weights, 4x convolutional subsampling (40 ms output frames)",
        f"- Output: CTC over {mc.get('vocab_size')} SentencePiece tokens (blank `<blk>` = 0)"
        + (", with language tags" if cfg.get("tokenizer_lang_tags") else ""),
        "", "## Training", "", *training_lines(cfg), "", "## Results", "",
        *(results_table(report) if report else ["No evaluation report was packed (`mlma pack --report`)."]),
        "", "## Usage", "", *usage_lines(name, onnx), "",
        "## Files", "", "- `model.safetensors`: weights; `config.json`: model, data and training configuration",
        "- `tokenizer.model`: SentencePiece model; `tokens.txt`: token table (`<piece> <id>`)",
    ]
    if onnx:
        lines.append(f"- `{ONNX_DIR}/`: the exported ONNX model (`mlma export`)")
    lines += ["", "<details><summary>config.json model section</summary>", "", "```json",
              json.dumps(mc, indent=2), "```", "", "</details>", ""]
    return "\n".join(lines)
