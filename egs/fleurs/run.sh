#!/usr/bin/env bash
# FLEURS, evaluation only (out-of-domain): decode and score a trained checkpoint on FLEURS test per language.
# Nothing is trained here; the checkpoint carries its model config, tokenizer and CMVN.
#
#   ./run.sh --stop-stage 1                                         # data only: manifests and features
#   ./run.sh --checkpoint ../mlma/exp/conmamba_paper/averaged.pt     # decode, score, report
#   ./run.sh --checkpoint ../librispeech/exp/conmamba_paper/averaged.pt --langs en --tag librispeech_conmamba
#
# Corpus path: FLEURS in local/db.sh (or the environment).
# Stages: 0 manifests (dev and test), 1 features, 2 decode, 3 score, 4 report.
# Outputs: $data/ and $exp/<tag>/ (relative paths: this directory).
set -euo pipefail
cd "$(dirname "$0")"
. ../../local/common.sh
. ../../local/recipe.sh
. ../../local/db.sh

stage=0
stop_stage=100
data=data
exp=exp
nj=8                                   # parallel jobs for manifests and features
langs="en,de,fr,es,it,nl"
splits="dev,test"                      # prepared; the train split is not needed for evaluation
eval_split="test"                      # decoded
checkpoint=""                          # the model to evaluate (stages 2-4)
tag=""                                 # name of the result directory under $exp (default: the checkpoint's directory)
graph=""                               # for --decode-methods wfst: graph dir (DIR/<lang>/ per language), `mlma lm graph`
decode_methods="ctc-greedy-search ctc-prefix-beam-search"
beam=10                                # prefix beam size
decode_device=auto                     # auto: cuda when a GPU is visible, else cpu
help_message="usage: $0 [--stage N] [--stop-stage N] [--checkpoint CKPT] [--tag NAME] [--langs en,de,...] [--data DIR] [--exp DIR] ...
Stages: 0 manifests, 1 features, 2 decode, 3 score, 4 report"
. ../../local/parse_options.sh

decode_device=$(resolve_device "$decode_device" "$(detect_ngpu)")

if [ "$stop_stage" -ge 2 ]; then
  if [ -z "$checkpoint" ]; then
    log "error: stages 2-4 evaluate a trained model: give --checkpoint PATH (or --stop-stage 1 for the data only)"
    exit 1
  fi
  [ -n "$tag" ] || tag=$(basename "$(dirname "$checkpoint")")
  dir=$exp/$tag
fi

if in_stage 0; then
  log "stage 0: FLEURS manifests ($langs; $splits)"
  require_corpus FLEURS
  run_once "$data/.done.manifests" mlma prepare fleurs "$FLEURS" --data-dir "$data" --langs "$langs" \
    --splits "$splits" --jobs "$nj"
fi

if in_stage 1; then
  log "stage 1: fbank features (no training split here, so no CMVN: the checkpoint carries its own)"
  run_once "$data/.done.features" mlma features --data-dir "$data" --all --jobs "$nj"
fi

if in_stage 2; then
  [ -f "$checkpoint" ] || { log "error: checkpoint $checkpoint not found"; exit 1; }
  for lang in ${langs//,/ }; do
    log "stage 2: decode fleurs/$lang/$eval_split with $checkpoint"
    decode_sets "$checkpoint" "$dir/decode" "$lang." "fleurs/$lang/$eval_split" "$graph"
  done
fi

if in_stage 3; then
  log "stage 3: score (WER/CER tables with 95% CIs) -> $dir/decode"
  mlma score --decode-dir "$dir/decode"
fi

if in_stage 4; then
  log "stage 4: per-language report -> $dir/report"
  mlma report "$dir/decode" --output-dir "$dir/report"
fi
