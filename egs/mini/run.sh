#!/usr/bin/env bash
# Mini recipe: the built-in synthetic six-language corpus (espeak-ng), a tiny ConMamba CTC model and its
# Conformer twin of the same size and budget, trained on CPU. The README's main job.
# --text words (default): open vocabulary (wordfreq word sequences with held-out words; docs/CORPUS.md); test sets
#   synthetic/<lang>/test (>= 20% of its word tokens never in the training text) and synthetic/<lang>/test_oov
#   (its utterances with such words); a character tokenizer, so unseen words can be spelled.
# --text grammar: the closed ~150-word sentence grammars (test sentences are new, their words are not).
#
#   ./run.sh                          # everything, both models
#   ./run.sh --stage 4 --models conmamba_tiny
#   ./run.sh --smoke true             # smallest setting (the test suite runs it)
#   ./run.sh --train-jobs 1           # train the models one after the other (on every core), not at once
#   ./run.sh --text grammar --tokenizer-type unigram   # the closed-vocabulary corpus of earlier releases
set -euo pipefail
cd "$(dirname "$0")"
. ../../local/common.sh

stage=0
stop_stage=100
models="conmamba_tiny conformer_tiny"   # configs under conf/train_<name>.yaml
langs="en,de,fr,es,it,nl"
text=words            # words (open vocabulary, held-out words) | grammar (closed, ~150 words a language)
train_utts=1500       # per language
dev_utts=60
test_utts=200
vocab_size=256        # unigram / bpe only (char takes every character of the training text)
tokenizer_type=char   # char | unigram | bpe (RESULTS.md: the ablation)
jobs=2
train_jobs=2          # models trained at the same time, each on nproc/train_jobs threads (tiny models use a
                      # second thread poorly: side by side on one core each, both finish ~15% sooner than in turn)
decode_methods="ctc-greedy-search ctc-prefix-beam-search"
avg=3                 # checkpoints averaged for decoding
smoke=false           # tiny corpus and a few training steps: proves the pipeline, not the accuracy
data=""              # default: data (data_smoke with --smoke true)
exp=""               # default: exp (exp_smoke with --smoke true)
help_message="usage: $0 [--stage N] [--stop-stage N] [--models 'conmamba_tiny conformer_tiny'] [--smoke true] ..."
. ../../local/parse_options.sh

train_overrides=()
if [ "$smoke" = true ]; then
  train_utts=12; dev_utts=4; test_utts=6; vocab_size=64; avg=1
  train_overrides=(--set max_steps=6 --set valid_every=3 --set checkpoint_every=3)
  data=${data:-data_smoke}; exp=${exp:-exp_smoke}
fi
data=${data:-data}; exp=${exp:-exp}
eval_splits="test"; [ "$text" = words ] && eval_splits="test test_oov"
test_sets=$(for l in ${langs//,/ }; do for s in $eval_splits; do printf 'synthetic/%s/%s,' "$l" "$s"; done; done)
test_sets=${test_sets%,}
# the tokenizer and training use exactly --langs, not whatever an earlier run left in $data
tokenizer_sets=(); train_sets=()
for l in $(tr ',' '\n' <<< "$langs" | sort); do  # sorted, as a glob over the data dir lists them
  tokenizer_sets+=(--dataset "synthetic/$l/train")
  train_sets+=(--train "synthetic/$l/train" --dev "synthetic/$l/dev")
done

if in_stage 0; then
  log "stage 0: synthesize the corpus and write manifests"
  run_once "$data/.done.prepare" mlma prepare synthetic --data-dir "$data" --langs "$langs" --text "$text" \
    --train-utts "$train_utts" --dev-utts "$dev_utts" --test-utts "$test_utts" --jobs "$jobs"
fi

if in_stage 1; then
  log "stage 1: fbank features and global CMVN"
  run_once "$data/.done.features" mlma features --data-dir "$data" --all --jobs "$jobs"
fi

if in_stage 2; then
  log "stage 2: one SentencePiece tokenizer over the training text of $langs"
  run_once "$data/.done.tokenizer" mlma tokenizer --data-dir "$data" "${tokenizer_sets[@]}" \
    --output-dir "$data/lang" --vocab-size "$vocab_size" --model-type "$tokenizer_type"
fi

if in_stage 3; then
  n_models=$(wc -w <<< "$models")
  parallel=$(( train_jobs < n_models ? train_jobs : n_models ))
  parallel=$(( parallel < 1 ? 1 : parallel ))
  thread_overrides=()
  if [ "$parallel" -gt 1 ]; then
    threads=$(( $(nproc) / parallel )); threads=$(( threads < 1 ? 1 : threads ))
    thread_overrides=(--set "train.threads=$threads" --set train.progress=false)
  fi
  train_model() {  # train_model MODEL
    run_once "$exp/$1/.done.train" mlma train --config "conf/train_$1.yaml" --data-dir "$data" \
      --tokenizer "$data/lang/tokenizer.model" --exp-dir "$exp/$1" "${train_sets[@]}" "${train_overrides[@]}" \
      "${thread_overrides[@]}"
  }
  pids=(); logs=()
  trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait; exit 130' INT TERM   # each training checkpoints and stops
  for model in $models; do
    if [ "$parallel" -eq 1 ]; then
      log "stage 3: train $model"
      train_model "$model"
      continue
    fi
    mkdir -p "$exp/$model"
    log "stage 3: train $model ($parallel at a time on $threads thread(s) each; output in $exp/$model/train.out)"
    train_model "$model" > "$exp/$model/train.out" 2>&1 &
    pids+=($!); logs+=("$exp/$model/train.out")
    if [ "${#pids[@]}" -ge "$parallel" ]; then
      wait_all pids logs || exit 1
      pids=(); logs=()
    fi
  done
  [ "${#pids[@]}" -eq 0 ] || wait_all pids logs || exit 1
  trap - INT TERM
fi

for model in $models; do
  dir=$exp/$model
  if in_stage 4; then
    log "stage 4: average the last $avg checkpoints of $model"
    run_once "$dir/.done.average" mlma average --exp-dir "$dir" --last "$avg" --output "$dir/averaged.pt"
  fi
  if in_stage 5; then
    log "stage 5: decode $model"
    for method in $decode_methods; do
      run_once "$dir/.done.decode.$method" mlma decode --checkpoint "$dir/averaged.pt" --data-dir "$data" \
        --test-sets "$test_sets" --method "$method" --output-dir "$dir/decode"
    done
  fi
  if in_stage 6; then
    log "stage 6: score (WER/CER tables, 95% CIs) and per-language report for $model"
    mlma score --decode-dir "$dir/decode"
    mlma report "$dir/decode" --output-dir "$dir/report"
  fi
  if in_stage 7; then
    log "stage 7: export $model to ONNX (fp32 + int8) and pack it as a model repository ($dir/package)"
    run_once "$dir/.done.export" mlma export --checkpoint "$dir/averaged.pt" --output-dir "$dir/onnx" --int8
    run_once "$dir/.done.pack" mlma pack --checkpoint "$dir/averaged.pt" --report "$dir/report/report.json" \
      --onnx "$dir/onnx" --name "mlma-mini-$model" --output-dir "$dir/package"
  fi
done
if in_stage 8; then
  log "stage 8: side-by-side WER/CER table of $models with OOV rates: $exp/compare.md"
  # shellcheck disable=SC2086
  python3 local/compare.py "$exp" $models --data "$data" > "$exp/compare.md"
fi
log "done: see $exp/compare.md, $exp/*/report/report.md and $exp/*/decode/scores.md; packaged models in $exp/*/package"
