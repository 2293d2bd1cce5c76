#!/usr/bin/env bash
# Common Voice, one language: ConMamba-CTC and its Conformer-CTC twin trained on the release's train split.
# The stages live here once; egs/commonvoice/<lang>/run.sh runs this script with its language:
#
#   egs/commonvoice/de/run.sh                          # every stage, both paper-size models, all visible GPUs
#   egs/commonvoice/de/run.sh --stop-stage 2           # data only: manifests, features, tokenizer
#   egs/commonvoice/run.sh --lang nl --models "conmamba_small conformer_small" --ngpu 1
#
# Corpus path: COMMONVOICE in local/db.sh (or the environment): an extracted release, <root>/<lang>/clips/*.mp3 + *.tsv.
# Stages: 0 manifests, 1 features, 2 tokenizer, 3 LM + graph (with --use-lm true), 4 train, 5 average,
#         6 decode, 7 score, 8 report.
# Outputs: $data/ and $exp/<model>/; relative paths are taken from the language directory (egs/commonvoice/<lang>/).
# Training configs: <lang>/conf/train_<model>.yaml when the language has its own, else conf/train_<model>.yaml.
set -euo pipefail
cd "$(dirname "$0")"
. ../../local/common.sh
. ../../local/recipe.sh
. ../../local/db.sh

lang=""                                # en de fr es it nl (given by <lang>/run.sh)
stage=0
stop_stage=100
data=data
exp=exp
nj=8                                   # parallel jobs for manifests and features
train_split="train"                     # the release's train.tsv (validated.tsv overlaps dev and test)
dev_split="dev"
test_split="test"
speed_perturb=auto                     # stage 1's 0.9/1.1 copies of the training cuts: auto = when a config in
                                       # $models trains on them (the small ones; the paper ones draw 0.95/1.0/1.05
                                       # per utterance on the fly and ignore them), else true | false
token_type=char                        # characters, as the ConMamba reference recipe
vocab_size=500                         # ignored for char
use_lm=false                           # stage 3: word 3-gram on the training sentences + HLG graph
lm_order=3
ctc_topo=standard                      # H of the graph: standard (exact CTC) or compact (3V arcs, big vocabularies)
models="conmamba_paper conformer_paper"  # train_<name>.yaml; small sizes: conmamba_small conformer_small
ngpu=auto                              # GPUs for training (auto: all visible); >1 runs torchrun DDP
train_opts=""                          # extra `mlma train` arguments, e.g. "--set train.max_epochs=10"
avg=10                                 # average the $avg checkpoints with the best dev $avg_by
avg_select=best                        # best | last
avg_by=wer                             # --best ranks by dev WER (the reference recipe) or loss
decode_methods="ctc-greedy-search ctc-prefix-beam-search"
beam=10                                # prefix beam size
decode_device=auto                     # auto: cuda when a GPU is visible, else cpu
help_message="usage: $0 --lang LANG [--stage N] [--stop-stage N] [--data DIR] [--exp DIR] [--models '...'] [--ngpu N|auto]
       [--train-opts '--set train.max_epochs=10'] [--use-lm true] [--nj N] ...
Stages: 0 manifests, 1 features, 2 tokenizer, 3 LM, 4 train, 5 average, 6 decode, 7 score, 8 report"
. ../../local/parse_options.sh

case "$lang" in
  en|de|fr|es|it|nl) ;;
  *) log "error: --lang must be one of en de fr es it nl (got '$lang')"; exit 1 ;;
esac
cd "$lang"

[ "$ngpu" = auto ] && ngpu=$(detect_ngpu)
decode_device=$(resolve_device "$decode_device" "$ngpu")
tokenizer=$data/lang/tokenizer.model
if [ "$use_lm" = true ]; then decode_methods="$decode_methods wfst"; fi
read -r -a extra_train_opts <<< "$train_opts"

if in_stage 0; then
  log "stage 0: manifests for commonvoice/$lang ($train_split $dev_split $test_split)"
  require_corpus COMMONVOICE
  run_once "$data/.done.manifests" mlma prepare commonvoice "$COMMONVOICE" --data-dir "$data" --langs "$lang" \
    --splits "$train_split,$dev_split,$test_split" --jobs "$nj"
fi

if in_stage 1; then
  confs=(); for model in $models; do confs+=("$(train_conf "$model" conf ../conf)"); done
  speed_perturb=$(resolve_speed_perturb "$speed_perturb" "${confs[@]}")
  log "stage 1: fbank features (48 kHz mp3 resampled to 16 kHz; 0.9/1.1 speed copies: $speed_perturb) and global CMVN"
  sp=(); [ "$speed_perturb" = true ] && sp=(--speed-perturb)
  run_once "$data/.done.features" mlma features --data-dir "$data" --all "${sp[@]}" --jobs "$nj"
fi

if in_stage 2; then
  log "stage 2: $token_type tokenizer on the training sentences"
  run_once "$data/.done.tokenizer" mlma tokenizer --data-dir "$data" --dataset "commonvoice/$lang/$train_split" \
    --output-dir "$data/lang" --vocab-size "$vocab_size" --model-type "$token_type"
fi

if in_stage 3 && [ "$use_lm" = true ]; then
  log "stage 3: word $lm_order-gram LM on the training sentences and its decoding graph"
  lm_and_graph "$lang" "" "commonvoice/$lang/$train_split"
fi

for model in $models; do
  dir=$exp/$model
  if in_stage 4; then
    log "stage 4: train $model"
    train_model "$dir" "$(train_conf "$model" conf ../conf)" \
      --train "commonvoice/$lang/$train_split" --dev "commonvoice/$lang/$dev_split"
  fi
  if in_stage 5; then
    log "stage 5: average $model"
    average_model "$dir"
  fi
  if in_stage 6; then
    log "stage 6: decode commonvoice/$lang/$test_split with $model"
    decode_sets "$dir/averaged.pt" "$dir/decode" "" "commonvoice/$lang/$test_split" "$data/graph"
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
