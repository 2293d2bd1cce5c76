#!/usr/bin/env bash
# The budget ablation of egs/mini/RESULTS.md ("Choosing the main job's training budget"): ConMamba-tiny trained on
# the corpus of a finished `run.sh --stop-stage 2`, each run a set of --set overrides on conf/train_conmamba_tiny.yaml,
# then averaged, decoded (greedy) and scored. Runs on one thread each, --jobs at a time.
#
#   local/budget_ablation.sh --data data --exp exp_budget                  # every run
#   local/budget_ablation.sh --data data --exp exp_budget --runs "base x4"
#   local/budget_ablation.sh ... --runs y1 --tokenizer exp_budget/lang_unigram256/tokenizer.model
#     (y1 wants a unigram tokenizer: mlma tokenizer ... --model-type unigram --vocab-size 256)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../../../local/common.sh
. ../../local/common.sh

data=data
exp=exp_budget
runs="base x1 x2 x3 x4 x5 x6 y1 y2"
jobs=2
tokenizer=""          # default: $data/lang/tokenizer.model (the recipe's character tokenizer)
extra=""              # more --set overrides after each run's own, e.g. "--set train.max_steps=4" (a smoke test)
langs="en,de,fr,es,it,nl"
help_message="usage: $0 [--data DIR] [--exp DIR] [--runs 'base x1 ...'] [--jobs N] [--tokenizer MODEL]"
# shellcheck source=../../../local/parse_options.sh
. ../../local/parse_options.sh
tokenizer=${tokenizer:-$data/lang/tokenizer.model}

# The default before this ablation, as overrides of today's config: Noam schedule, dropout 0.1 (front end too),
# SpecAugment, 60 s batches, 1,000 steps.
base=(--set model.dropout=0.1 --set train.lr_schedule=noam --set train.warmup_steps=150 --set train.max_steps=1000
      --set data.max_duration=60 --set train.valid_every=250 --set train.checkpoint_every=100
      --set 'data.spec_augment={num_frame_masks: 2, frames_mask_size: 10, num_feature_masks: 2, features_mask_size: 10}')
x1=("${base[@]}" --set train.lr_schedule=cosine --set model.frontend_dropout=0.0)
wide=(--set model.d_model=144 --set model.ffn_dim=576)
half_batches=(--set data.max_duration=30 --set train.max_steps=2000 --set train.warmup_steps=300
              --set train.checkpoint_every=200 --set train.valid_every=500)
x4=("${x1[@]}" --set model.dropout=0.0 --set data.spec_augment=null)

overrides_of() {  # overrides_of RUN -> the run's --set arguments, one per line
  case $1 in
    base) printf '%s\n' "${base[@]}" ;;
    x1) printf '%s\n' "${x1[@]}" ;;                           # cosine schedule, no dropout in the front end
    x2) printf '%s\n' "${x1[@]}" "${wide[@]}" ;;              # x1, width 144
    x3) printf '%s\n' "${x1[@]}" "${half_batches[@]}" ;;      # x1, 30 s batches, twice the steps
    x4) printf '%s\n' "${x4[@]}" ;;                           # x1, no dropout, no SpecAugment
    x5) printf '%s\n' "${x4[@]}" "${half_batches[@]}" ;;      # x4, 30 s batches, twice the steps
    x6) printf '%s\n' "${x4[@]}" "${wide[@]}" ;;              # x4, width 144
    y1) printf '%s\n' "${x1[@]}" ;;                           # x1 with --tokenizer (a unigram one)
    y2) printf '%s\n' "${x1[@]}" --set model.subsampling_factor=2 ;;  # x1, 20 ms output frames
    *) echo "unknown run $1" >&2; return 1 ;;
  esac
}

sets=(); test_sets=""
for l in $(tr ',' '\n' <<< "$langs" | sort); do
  sets+=(--train "synthetic/$l/train" --dev "synthetic/$l/dev")
  test_sets+="synthetic/$l/test,"
done

one_run() {  # one_run NAME
  local dir=$exp/$1 args
  mapfile -t args < <(overrides_of "$1")
  # shellcheck disable=SC2206
  args+=($extra)
  run_once "$dir/.done.train" mlma train --config conf/train_conmamba_tiny.yaml --data-dir "$data" \
    --tokenizer "$tokenizer" --exp-dir "$dir" "${sets[@]}" "${args[@]}" --set train.threads=1 --set train.progress=false
  run_once "$dir/.done.average" mlma average --exp-dir "$dir" --last 3 --output "$dir/averaged.pt"
  OMP_NUM_THREADS=1 run_once "$dir/.done.decode" mlma decode --checkpoint "$dir/averaged.pt" --data-dir "$data" \
    --test-sets "${test_sets%,}" --method ctc-greedy-search --output-dir "$dir/decode"
  mlma score --decode-dir "$dir/decode" > "$dir/scores.txt"
}

pids=(); logs=()
for name in $runs; do
  overrides_of "$name" > /dev/null
  mkdir -p "$exp/$name"
  log "run $name: $(overrides_of "$name" | grep -v '^--set$' | tr '\n' ' ')"
  one_run "$name" > "$exp/$name/run.out" 2>&1 &
  pids+=($!); logs+=("$exp/$name/run.out")
  if [ "${#pids[@]}" -ge "$jobs" ]; then wait_all pids logs || exit 1; pids=(); logs=(); fi
done
[ "${#pids[@]}" -eq 0 ] || wait_all pids logs || exit 1
log "done: $exp/<run>/scores.txt (CER per language), $exp/<run>/train.log (dev loss)"
