#!/usr/bin/env bash
# Create (or reuse) .venv with everything mlma needs on a CPU machine.
#   tools/setup_env.sh          runtime: torch (CPU, pinned), mlma and its LM decoders, espeak-ng, wordfreq
#   tools/setup_env.sh --dev    also the test tools and mamba-ssm's source (reference functions)
#   tools/setup_env.sh --k2     also .venv-k2 (Python 3.9 + torch 1.13.1 + k2 1.23.4) for the k2 backend
# GPU users: install torch for your CUDA first, then `pip install -e .[lm,gpu]` (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
dev=false; k2=false
for arg in "$@"; do
  case "$arg" in
    --dev) dev=true ;;
    --k2) k2=true ;;
    *) echo "setup_env.sh: unknown option $arg (use --dev, --k2)" >&2; exit 2 ;;
  esac
done
log() { echo "[setup $(date +%H:%M:%S)] $*"; }

need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian packages: ${need_apt[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}") >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup_env.sh: please install ${need_apt[*]} (e.g. apt-get install ${need_apt[*]})" >&2; exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # Pinned CPU build first: an unpinned torch would pull a multi-GB CUDA build.
  log "installing torch==${MLMA_TORCH_VERSION:-2.13.0} (CPU)"
  "${pip[@]}" "torch==${MLMA_TORCH_VERSION:-2.13.0}"
fi
extras="lm,onnx,vad,corpus"; $dev && extras="lm,onnx,vad,corpus,dev"
# The CPU scan kernel is compiled at first use; without a system C compiler take zig cc from PyPI.
if [ -z "${CC:-}" ] && ! command -v cc >/dev/null && ! command -v gcc >/dev/null && ! command -v clang >/dev/null; then
  log "no C compiler on PATH: adding ziglang (zig cc) for the CPU scan kernel"
  extras="$extras,kernel"
fi
log "installing mlma[$extras]"
"${pip[@]}" -e ".[$extras]"

if $dev; then
  # mamba-ssm's own pure-torch reference functions, for the tests that compare our scans with them. Its
  # package needs the CUDA extension to install, so only the source is fetched (the sdist is 0.2 MB).
  ref=.cache/mamba-ssm-src
  if [ ! -d "$ref/mamba_ssm" ]; then
    log "fetching mamba-ssm ${MLMA_MAMBA_SSM_VERSION:-2.3.2.post1} source for the reference tests"
    tmp=$(mktemp -d)
    # pip prepares the sdist's metadata by running its setup.py: the two variables keep that from
    # compiling CUDA code or fetching a prebuilt wheel, and the venv's torch serves its imports.
    MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE .venv/bin/python -m pip download -q \
      --disable-pip-version-check --no-deps --no-build-isolation --no-binary :all: \
      "mamba-ssm==${MLMA_MAMBA_SSM_VERSION:-2.3.2.post1}" -d "$tmp"
    mkdir -p "$ref"
    tar -xzf "$tmp"/mamba_ssm-*.tar.gz -C "$tmp"
    mv "$tmp"/mamba_ssm-*/mamba_ssm "$ref/"
    rm -rf "$tmp"
  fi
fi

if $k2; then
  pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  py39=${PYTHON39:-$(ls -d "$pyenv_root"/versions/3.9*/bin/python 2>/dev/null | tail -n 1)}
  if [ -z "$py39" ]; then echo "setup_env.sh: --k2 needs a Python 3.9 (set PYTHON39=/path/to/python3.9)" >&2; exit 1; fi
  if [ ! -x .venv-k2/bin/python ]; then
    log "creating .venv-k2 with $py39"
    "$py39" -m venv .venv-k2
  fi
  if ! .venv-k2/bin/python -c "import k2" 2>/dev/null; then
    log "installing k2 1.23.4 + torch 1.13.1 into .venv-k2"
    .venv-k2/bin/python -m pip install -q --disable-pip-version-check torch==1.13.1 k2==1.23.4 'numpy<2' \
      'lhotse==1.31.1' sentencepiece typer rich jiwer soundfile urllib3 lilcom scipy pyyaml kaldialign \
      kaldifst kaldi-decoder kaldilm
  fi
  .venv-k2/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
fi
log "ready: $(.venv/bin/python -c 'import torch, lhotse; print("torch", torch.__version__, "lhotse", lhotse.__version__)')"
