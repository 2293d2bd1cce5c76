#!/usr/bin/env bash
# LibriSpeech 960 h (English): ConMamba-CTC and its Conformer-CTC twin, the ConMamba paper's reference setup.
# Corpus path: LIBRISPEECH in local/db.sh (or the environment). See README.md for the data and hardware.
#
#   ./run.sh                                       # every stage, both paper-size models, all visible GPUs
#   ./run.sh --stop-stage 2                        # data only: manifests, features, tokenizer
#   ./run.sh --stage 4 --models conmamba_small --ngpu 1
#   ./run.sh --use-lm true                         # also build a word 3-gram graph and decode with it (wfst)
#
# Stages: 0 manifests, 1 features, 2 tokenizer, 3 LM + graph (with --use-lm true), 4 train, 5 average,
#         6 decode, 7 score, 8 report.  Outputs: $data/ and $exp/<model>/ (relative paths: this directory).
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
train_parts="train-clean-100 train-clean-360 train-other-500"
dev_parts="dev-clean dev-other"
test_parts="test-clean test-other"
speed_perturb=auto                     # stage 1's 0.9/1.1 copies of the training cuts: auto = when a config in
                                       # $models trains on them (the small ones; the paper ones draw 0.95/1.0/1.05
                                       # per utterance on the fly and ignore them), else true | false
token_type=char                        # the reference recipe uses characters (31 for English)
vocab_size=500                         # ignored for char
use_lm=false                           # stage 3: word 3-gram on the training transcripts + HLG graph
lm_order=3
ctc_topo=standard                      # H of the graph: standard (exact CTC) or compact (3V arcs, big vocabularies)
models="conmamba_paper conformer_paper"  # conf/train_<name>.yaml; small sizes: conmamba_small conformer_small
ngpu=auto                              # GPUs for training (auto: all visible); >1 runs torchrun DDP
train_opts=""                          # extra `mlma train` arguments, e.g. "--set train.max_epochs=10"
avg=10                                 # average the $avg checkpoints with the best dev $avg_by
avg_select=best                        # best | last
avg_by=wer                             # --best ranks by dev WER (the reference recipe) or loss
decode_methods="ctc-greedy-search ctc-prefix-beam-search"
beam=10                                # prefix beam size
decode_device=auto                     # auto: cuda when a GPU is visible, else cpu
help_message="usage: $0 [--stage N] [--stop-stage N] [--data DIR] [--exp DIR] [--models 'conmamba_paper conformer_paper']
       [--ngpu N|auto] [--train-opts '--set train.max_epochs=10'] [--use-lm true] [--nj N] ...
Stages: 0 manifests, 1 features, 2 tokenizer, 3 LM, 4 train, 5 average, 6 decode, 7 score, 8 report"
. ../../local/parse_options.sh

[ "$ngpu" = auto ] && ngpu=$(detect_ngpu)
decode_device=$(resolve_device "$decode_device" "$ngpu")
tokenizer=$data/lang/tokenizer.model
train_sets=(); for p in $train_parts; do train_sets+=("librispeech/en/$p"); done
dev_sets=(); for p in $dev_parts; do dev_sets+=("librispeech/en/$p"); done
test_sets=(); for p in $test_parts; do test_sets+=("librispeech/en/$p"); done
if [ "$use_lm" = true ]; then decode_methods="$decode_methods wfst"; fi
read -r -a extra_train_opts <<< "$train_opts"

if in_stage 0; then
  log "stage 0: manifests ($train_parts $dev_parts $test_parts)"
  require_corpus LIBRISPEECH
  parts="$train_parts $dev_parts $test_parts"
  run_once "$data/.done.manifests" mlma prepare librispeech "$LIBRISPEECH" --data-dir "$data" --langs en \
    --splits "${parts// /,}" --jobs "$nj"
fi

if in_stage 1; then
  confs=(); for model in $models; do confs+=("$(train_conf "$model")"); done
  speed_perturb=$(resolve_speed_perturb "$speed_perturb" "${confs[@]}")
  log "stage 1: fbank features (0.9/1.1 speed copies of the training parts: $speed_perturb) and global CMVN"
  sp=(); [ "$speed_perturb" = true ] && sp=(--speed-perturb)
  run_once "$data/.done.features" mlma features --data-dir "$data" --all "${sp[@]}" --jobs "$nj"
fi

if in_stage 2; then
  log "stage 2: $token_type tokenizer on the training transcripts"
  mapfile -t dataset_opts < <(repeat_opt --dataset "${train_sets[@]}")
  run_once "$data/.done.tokenizer" mlma tokenizer --data-dir "$data" "${dataset_opts[@]}" \
    --output-dir "$data/lang" --vocab-size "$vocab_size" --model-type "$token_type"
fi

if in_stage 3 && [ "$use_lm" = true ]; then
  log "stage 3: word $lm_order-gram LM on the training transcripts and its decoding graph"
  lm_and_graph en "" "${train_sets[@]}"
fi

for model in $models; do
  dir=$exp/$model
  if in_stage 4; then
    log "stage 4: train $model"
    mapfile -t set_opts < <(repeat_opt --train "${train_sets[@]}"; repeat_opt --dev "${dev_sets[@]}")
    train_model "$dir" "$(train_conf "$model")" "${set_opts[@]}"
  fi
  if in_stage 5; then
    log "stage 5: average $model"
    average_model "$dir"
  fi
  if in_stage 6; then
    log "stage 6: decode ${test_sets[*]} with $model"
    decode_sets "$dir/averaged.pt" "$dir/decode" "" "$(join_by , "${test_sets[@]}")" "$data/graph"
  fi
  if in_stage 7; then
    log "stage 7: score $model (WER/CER tables with 95% CIs)"
    mlma score --decode-dir "$dir/decode"
  fi
  if in_stage 8; then
    log "stage 8: per-language report for $model -> $dir/report"
    mlma report "$dir/decode" --output-dir "$dir/report"
  fi
done
