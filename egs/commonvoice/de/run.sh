#!/usr/bin/env bash
# Common Voice, German: the stages are in ../run.sh, shared by the six languages; every option there works here.
#   ./run.sh --stop-stage 2        # data only      ./run.sh --stage 4 --models conmamba_small --ngpu 1
exec "$(dirname "$0")/../run.sh" --lang de "$@"
