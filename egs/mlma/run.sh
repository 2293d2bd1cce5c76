#!/usr/bin/env bash
# MLMA: one multilingual ConMamba-CTC model (and its Conformer-CTC twin) for en de fr es it nl, trained on
# LibriSpeech 960 h + Common Voice of the six languages with language-balanced (temperature) sampling and one
# language-balanced tokenizer, evaluated per language on LibriSpeech test-clean/test-other, Common Voice test and
# FLEURS test (out-of-domain). GPU defaults: paper size, bf16, torchrun DDP over all visible GPUs.
#
#   ./run.sh                                      # everything (see README.md for the data and hardware)
#   ./run.sh --stop-stage 2                       # data only: manifests, features, tokenizer
#   ./run.sh --stage 4 --models conmamba_paper --ngpu 8 --train-opts "--set train.accum_grad=2"
#   ./run.sh --langs en,de --use-fleurs false     # a subset of the languages
#
# Corpus paths: LIBRISPEECH, COMMONVOICE, FLEURS in local/db.sh (or the environment).
# Stages: 0 manifests, 1 features, 2 tokenizer, 3 LMs + graphs (with --use-lm true), 4 train, 5 average,
#         6 decode (per language), 7 score, 8 report (language x test set).
# Outputs: $data/ and $exp/<model>/ (relative paths: this directory).
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
ls_train_parts="train-clean-100 train-clean-360 train-other-500"   # LibriSpeech (en only)
ls_dev_parts="dev-clean dev-other"
ls_test_parts="test-clean test-other"
cv_train_split="train"                 # Common Voice train.tsv (validated.tsv overlaps dev and test)
cv_dev_split="dev"
cv_test_split="test"
use_fleurs=true                        # prepare and decode FLEURS test (out-of-domain)
fleurs_test_split="test"
speed_perturb=auto                     # stage 1's 0.9/1.1 copies of the training cuts: auto = when a config in
                                       # $models trains on them (the small ones; the paper ones draw 0.95/1.0/1.05
                                       # per utterance on the fly and ignore them), else true | false
token_type=unigram                     # one SentencePiece model over all languages
vocab_size=1000
token_alpha=0.3                        # tokenizer text balance: n_l^alpha (0 = equal share, 1 = natural)
lang_tags=false                        # add <en> <de> ... pieces (MLMA itself needs no language id)
use_lm=false                           # stage 3: a word 3-gram per language on its training text + HLG graph
lm_order=3
ctc_topo=standard                      # H of the graph: standard (exact CTC) or compact (3V arcs, big vocabularies)
models="conmamba_paper conformer_paper"  # conf/train_<name>.yaml; small sizes: conmamba_small conformer_small
ngpu=auto                              # GPUs for training (auto: all visible); >1 runs torchrun DDP
train_opts=""                          # extra `mlma train` arguments, e.g. "--set data.alpha=0.5"
avg=10                                 # average the $avg checkpoints with the best dev $avg_by
avg_select=best                        # best | last
avg_by=wer                             # --best ranks by dev WER (the reference recipe) or loss
decode_methods="ctc-greedy-search ctc-prefix-beam-search"
beam=10                                # prefix beam size
decode_device=auto                     # auto: cuda when a GPU is visible, else cpu
help_message="usage: $0 [--stage N] [--stop-stage N] [--data DIR] [--exp DIR] [--langs en,de,fr,es,it,nl]
       [--models 'conmamba_paper conformer_paper'] [--ngpu N|auto] [--train-opts '--set data.alpha=0.5']
       [--use-fleurs true|false] [--use-lm true] [--nj N] ...
Stages: 0 manifests, 1 features, 2 tokenizer, 3 LM, 4 train, 5 average, 6 decode, 7 score, 8 report"
. ../../local/parse_options.sh

lang_list=${langs//,/ }
for l in $lang_list; do
  case "$l" in
    en|de|fr|es|it|nl) ;;
    *) log "error: --langs: '$l' is not one of en de fr es it nl"; exit 1 ;;
  esac
done
has_en=false
case ",$langs," in *,en,*) has_en=true ;; esac

[ "$ngpu" = auto ] && ngpu=$(detect_ngpu)
decode_device=$(resolve_device "$decode_device" "$ngpu")
tokenizer=$data/lang/tokenizer.model
if [ "$use_lm" = true ]; then decode_methods="$decode_methods wfst"; fi
read -r -a extra_train_opts <<< "$train_opts"

# Datasets per role: corpus/lang/split names.
train_sets=(); dev_sets=()
if [ "$has_en" = true ]; then
  for p in $ls_train_parts; do train_sets+=("librispeech/en/$p"); done
  for p in $ls_dev_parts; do dev_sets+=("librispeech/en/$p"); done
fi
for l in $lang_list; do
  train_sets+=("commonvoice/$l/$cv_train_split")
  dev_sets+=("commonvoice/$l/$cv_dev_split")
done
test_sets_of() {
  # test_sets_of LANG   prints the test sets of one language, comma-separated
  local l=$1
  local out=()
  if [ "$l" = en ]; then
    for p in $ls_test_parts; do out+=("librispeech/en/$p"); done
  fi
  out+=("commonvoice/$l/$cv_test_split")
  if [ "$use_fleurs" = true ]; then out+=("fleurs/$l/$fleurs_test_split"); fi
  join_by , "${out[@]}"
}

if in_stage 0; then
  log "stage 0: manifests (LibriSpeech: $has_en; Common Voice: $langs; FLEURS: $use_fleurs)"
  if [ "$has_en" = true ]; then
    require_corpus LIBRISPEECH
    parts="$ls_train_parts $ls_dev_parts $ls_test_parts"
    run_once "$data/.done.manifests.librispeech" mlma prepare librispeech "$LIBRISPEECH" --data-dir "$data" \
      --langs en --splits "${parts// /,}" --jobs "$nj"
  fi
  require_corpus COMMONVOICE
  run_once "$data/.done.manifests.commonvoice" mlma prepare commonvoice "$COMMONVOICE" --data-dir "$data" \
    --langs "$langs" --splits "$cv_train_split,$cv_dev_split,$cv_test_split" --jobs "$nj"
  if [ "$use_fleurs" = true ]; then
    require_corpus FLEURS
    run_once "$data/.done.manifests.fleurs" mlma prepare fleurs "$FLEURS" --data-dir "$data" \
      --langs "$langs" --splits "$fleurs_test_split" --jobs "$nj"
  fi
fi

if in_stage 1; then
  confs=(); for model in $models; do confs+=("$(train_conf "$model")"); done
  speed_perturb=$(resolve_speed_perturb "$speed_perturb" "${confs[@]}")
  log "stage 1: fbank features of every dataset (0.9/1.1 speed copies of the training splits: $speed_perturb), CMVN"
  sp=(); [ "$speed_perturb" = true ] && sp=(--speed-perturb)
  run_once "$data/.done.features" mlma features --data-dir "$data" --all "${sp[@]}" --jobs "$nj"
fi

if in_stage 2; then
  log "stage 2: one $token_type tokenizer ($vocab_size) over all languages' training text, balance alpha $token_alpha"
  mapfile -t dataset_opts < <(repeat_opt --dataset "${train_sets[@]}")
  tags=--no-lang-tags; [ "$lang_tags" = true ] && tags=--lang-tags
  run_once "$data/.done.tokenizer" mlma tokenizer --data-dir "$data" "${dataset_opts[@]}" --output-dir "$data/lang" \
    --vocab-size "$vocab_size" --model-type "$token_type" --balance-alpha "$token_alpha" "$tags"
fi

if in_stage 3 && [ "$use_lm" = true ]; then
  for l in $lang_list; do
    log "stage 3: word $lm_order-gram LM on the $l training text and its graph $data/graph/$l"
    l_sets=()
    for s in "${train_sets[@]}"; do [[ $s == */"$l"/* ]] && l_sets+=("$s"); done
    lm_and_graph "$l" ".$l" "${l_sets[@]}"
  done
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
    for l in $lang_list; do
      log "stage 6: decode $l with $model"
      decode_sets "$dir/averaged.pt" "$dir/decode" "$l." "$(test_sets_of "$l")" "$data/graph"
    done
  fi
  if in_stage 7; then
    log "stage 7: score $model (WER/CER per language and test set, 95% CIs)"
    mlma score --decode-dir "$dir/decode"
  fi
  if in_stage 8; then
    log "stage 8: per-language report for $model -> $dir/report"
    mlma report "$dir/decode" --output-dir "$dir/report"
  fi
done
