#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by run.sh after its defaults:
#   --stage 3 --stop-stage 5 --model-size conmamba-tiny   ->   stage=3 stop_stage=5 model_size=conmamba-tiny
# Only variables the script already defines can be set; anything else is an error.
# Positional arguments are left in "$@".
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      if [ -n "${help_message:-}" ]; then echo "$help_message"; else echo "usage: $0 [--name value ...]"; fi
      exit 0 ;;
    --*=*)
      echo "$0: use '--name value', not '$1'" >&2; exit 1 ;;
    --*)
      name=$(echo "${1#--}" | tr '-' '_')
      if ! declare -p "$name" >/dev/null 2>&1; then
        echo "$0: unknown option $1 (no variable '$name' in the script)" >&2; exit 1
      fi
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      printf -v "$name" '%s' "$2"
      shift 2 ;;
    *) break ;;
  esac
done
true
