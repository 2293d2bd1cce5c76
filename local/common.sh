#!/usr/bin/env bash
# Shared helpers for every egs/*/run.sh: PATH to mlma, log(), stage guards and .done markers.
# Source it from a recipe directory:  . "$(dirname "$0")/../../local/common.sh"  (depth varies)

MLMA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MLMA_ROOT
if [ -x "$MLMA_ROOT/.venv/bin/mlma" ]; then
  export PATH="$MLMA_ROOT/.venv/bin:$PATH"
fi
if ! command -v mlma >/dev/null 2>&1; then
  echo "mlma not found: run tools/setup_env.sh in $MLMA_ROOT first" >&2
  exit 1
fi

log() {
  # log MESSAGE...   prints time, script and message to stderr
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]:-main}) $*" >&2
}

in_stage() {
  # in_stage N  -> true when N lies in [stage, stop_stage]
  [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]
}

run_once() {
  # run_once MARKER CMD...   runs CMD unless MARKER exists; touches MARKER after success
  local marker=$1; shift
  if [ -f "$marker" ]; then
    log "skip (done: $marker)"
    return 0
  fi
  "$@"
  mkdir -p "$(dirname "$marker")"
  touch "$marker"
}
