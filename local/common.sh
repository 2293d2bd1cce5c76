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

stage_signature() {
  # stage_signature CMD...   the command line, plus a checksum of each argument that names a small file
  # (configs, tokenizer models): what decides whether a finished stage is still up to date. Written after
  # the stage succeeded, so the files it wrote itself (e.g. averaged.pt) are recorded as it left them.
  printf '%q ' "$@"; echo
  local arg
  for arg in "$@"; do
    if [ -f "$arg" ] && [ "$(stat -c %s "$arg")" -le 4194304 ]; then
      echo "file $arg $(sha256sum < "$arg" | cut -d' ' -f1)"
    fi
  done
}

run_once() {
  # run_once MARKER CMD...   runs CMD unless MARKER records this same command (and the same small input
  # files) as done; writes the record after success. A changed command or config reruns the stage and
  # every stage whose marker in the same directory was written after it.
  local marker=$1; shift
  if [ -f "$marker" ]; then
    if [ ! -s "$marker" ]; then
      log "skip (done: $marker; an empty marker from before markers recorded their command: delete it to rerun)"
      return 0
    fi
    local signature
    signature=$(stage_signature "$@")
    if [ "$(cat "$marker")" = "$signature" ]; then
      log "skip (done: $marker)"
      return 0
    fi
    log "rerunning: the command or its config changed since $marker was written"
    diff <(cat "$marker") <(echo "$signature") | grep '^[<>]' | sed 's/^/    /' >&2 || true
    # stages that finished after this one used its old output: their markers go too, so they rerun
    find "$(dirname "$marker")" -maxdepth 1 -name '.done.*' -newer "$marker" ! -name '*.tmp' \
      -printf '    later stage reruns too: %f\n' -delete >&2
    rm -f "$marker"
  fi
  "$@" || return $?  # (also where the caller's errexit does not apply): no marker for a failed stage
  mkdir -p "$(dirname "$marker")"
  stage_signature "$@" > "$marker.tmp" && mv "$marker.tmp" "$marker"
}

wait_all() {
  # wait_all PIDS LOGS   (names of two arrays) waits for every background job PIDS[i]; echoes the last line of
  # the log file LOGS[i] of each that succeeded, and of each that failed its last lines. Returns 1 when any
  # failed, after all have ended.
  local -n _pids=$1 _logs=$2
  local i failed=0
  for i in "${!_pids[@]}"; do
    if wait "${_pids[$i]}"; then
      echo "    ${_logs[$i]}: $(tail -n 1 "${_logs[$i]}" 2>/dev/null)" >&2
    else
      log "failed: see ${_logs[$i]}; its last lines:"
      tail -n 15 "${_logs[$i]}" >&2 || true
      failed=1
    fi
  done
  return "$failed"
}
