#!/usr/bin/env bash
# Helpers shared by the corpus recipes (egs/librispeech, egs/commonvoice, egs/fleurs, egs/mlma).
# Source it after local/common.sh:   . ../../local/common.sh; . ../../local/recipe.sh

require_corpus() {
  # require_corpus VAR   exits with a message unless the corpus path variable VAR (from local/db.sh) names a directory
  local var=$1
  local dir=${!var:-}
  if [ -z "$dir" ]; then
    log "error: $var is not set; export $var=/path/to/the/corpus or set it in $MLMA_ROOT/local/db.sh"
    exit 1
  fi
  if [ ! -d "$dir" ]; then
    log "error: $var=$dir is not a directory; fix it in the environment or in $MLMA_ROOT/local/db.sh"
    exit 1
  fi
}

detect_ngpu() {
  # detect_ngpu   prints the number of visible NVIDIA GPUs (CUDA_VISIBLE_DEVICES, else nvidia-smi; 0 without either)
  if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
    if [ -z "$CUDA_VISIBLE_DEVICES" ]; then echo 0; else echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .; fi
  elif command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}

mlma_train() {
  # mlma_train NGPU ARGS...   `mlma train ARGS` on one device, or DDP over NGPU local GPUs through torchrun
  local ngpu=$1
  shift
  if [ "$ngpu" -gt 1 ]; then
    log "DDP on $ngpu GPUs: torchrun --standalone --nproc-per-node $ngpu -m mlma_cli train $*"
    torchrun --standalone --nproc-per-node "$ngpu" -m mlma_cli train "$@"
  else
    log "mlma train $*"
    mlma train "$@"
  fi
}

train_conf() {
  # train_conf NAME [DIR...]   prints the first DIR/train_NAME.yaml that exists (default DIR: conf); exits if none
  local name=$1
  shift
  local d
  for d in "${@:-conf}"; do
    if [ -f "$d/train_${name}.yaml" ]; then
      echo "$d/train_${name}.yaml"
      return 0
    fi
  done
  log "error: no train_${name}.yaml in ${*:-conf}"
  exit 1
}

resolve_speed_perturb() {
  # resolve_speed_perturb auto|true|false CONF...   prints true or false: whether stage 1 writes the 0.9/1.1 speed
  #   copies of the training cuts (mlma features --speed-perturb). auto: true when one of the training CONFs reads
  #   them, i.e. sets neither data.speed_perturb_factors (on-the-fly perturbation, which ignores the copies) nor
  #   data.speed_perturb: false. Reads the keys as the recipes' configs spell them (block YAML, one per line); an
  #   override in --train-opts is not seen: give --speed-perturb true|false then.
  local value=$1 conf
  shift
  if [ "$value" != auto ]; then
    echo "$value"
    return 0
  fi
  for conf in "$@"; do
    if ! grep -Eq '^[[:space:]]+speed_perturb_factors:[[:space:]]*\[' "$conf" &&
       ! grep -Eq '^[[:space:]]+speed_perturb:[[:space:]]*false' "$conf"; then
      echo true
      return 0
    fi
  done
  echo false
}

join_by() {
  # join_by SEP ITEM...   prints the items joined by SEP:  join_by , a b c  ->  a,b,c
  local sep=$1
  shift
  local out=""
  local item
  for item in "$@"; do out+="${out:+$sep}$item"; done
  echo "$out"
}

repeat_opt() {
  # repeat_opt OPT ITEM...   prints one line per item for mapfile:  OPT ITEM ...
  # usage: mapfile -t args < <(repeat_opt --dataset a b)   ->  args=(--dataset a --dataset b)
  local opt=$1
  shift
  local item
  for item in "$@"; do printf '%s\n%s\n' "$opt" "$item"; done
}

resolve_device() {
  # resolve_device auto|cpu|cuda[:N] NGPU   prints the device: auto -> cuda when NGPU > 0, else cpu
  if [ "$1" != auto ]; then echo "$1"; elif [ "$2" -gt 0 ]; then echo cuda; else echo cpu; fi
}

lm_and_graph() {
  # lm_and_graph LANG TAG DATASET...   word $lm_order-gram on the DATASETs' text -> $data/lm/LANG/lm.arpa, and
  #   its decoding graph (H topology $ctc_topo) -> $data/graph/LANG. TAG suffixes the .done markers ("" or ".LANG").
  local lang=$1 tag=$2; shift 2
  run_once "$data/.done.lm$tag" mlma lm train --output "$data/lm/$lang/lm.arpa" --data-dir "$data" \
    --datasets "$(join_by , "$@")" --order "$lm_order"
  run_once "$data/.done.graph$tag" mlma lm graph --arpa "$data/lm/$lang/lm.arpa" --tokenizer "$tokenizer" \
    --output-dir "$data/graph/$lang" --topo "$ctc_topo"
}

# ---- model stages shared by the corpus recipes. They read the recipe's variables:
#      ngpu, data, tokenizer, extra_train_opts (train); avg_select, avg, avg_by (average; avg_by unset = loss);
#      decode_methods, beam, decode_device (decode).

train_model() {
  # train_model MODEL_DIR CONF DATASET_OPTS...   (DATASET_OPTS: --train X ... --dev Y ...)
  local dir=$1 conf=$2; shift 2
  log "train $(basename "$dir") ($conf) on $ngpu GPU(s)"
  run_once "$dir/.done.train" mlma_train "$ngpu" --config "$conf" --data-dir "$data" --tokenizer "$tokenizer" \
    "$@" --exp-dir "$dir" "${extra_train_opts[@]}"
}

average_model() {
  # average_model MODEL_DIR   -> MODEL_DIR/averaged.pt from the $avg_select $avg checkpoints
  local dir=$1
  log "average the $avg_select $avg checkpoints of $(basename "$dir")"
  run_once "$dir/.done.average" mlma average --exp-dir "$dir" "--$avg_select" "$avg" ${avg_by:+--best-by "$avg_by"} \
    --output "$dir/averaged.pt"
}

decode_sets() {
  # decode_sets CHECKPOINT OUT_DIR TAG TEST_SETS GRAPH   every method in $decode_methods; TAG names the .done markers
  local checkpoint=$1 out=$2 tag=$3 sets=$4 graph_dir=$5 method graph_opt
  for method in $decode_methods; do
    log "decode $sets with $checkpoint, $method"
    graph_opt=(); [ "$method" = wfst ] && graph_opt=(--graph "$graph_dir")
    run_once "$out/.done.$tag$method" mlma decode --checkpoint "$checkpoint" --data-dir "$data" \
      --test-sets "$sets" --method "$method" --beam "$beam" "${graph_opt[@]}" --device "$decode_device" --output-dir "$out"
  done
}
