"""Write a tiny random-weight Llama in Hugging Face format, for tests that start real vLLM.

Runs with a Python that has torch, transformers and tokenizers (vLLM's environment), not airlock's:

    $VLLM_PYTHON -m airlock.testing.write_tiny_llama OUT_DIR --layers 2 --heads 4 --kv-heads 2 --head-dim 32
    $VLLM_PYTHON -m airlock.testing.write_tiny_llama OUT_DIR --arch Gemma2Config --config-json '{"num_hidden_layers": 4, ...}'

With ``--arch``/``--config-json`` the JSON gives the model's whole shape (the shape flags are ignored) for
any transformers config class; the tokenizer, its token ids and the vocabulary come from here.

It is standalone on purpose (only the standard library besides those three), so it can be run by
file path from an environment where airlock is not installed. A byte-level BPE tokenizer is trained
on a few KB of text; the chat template is ChatML. A few MB in bf16; vLLM loads it in under a second.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEXT = (
    "The quick brown fox jumps over the lazy dog. Air-gapped sites never touch the internet. "
    "Models cross on verified media and are served behind a gateway with keys and metrics. "
) * 40


def write(
    out: Path,
    *,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    vocab: int,
    dtype: str,
    seed: int,
    arch: str = "LlamaConfig",
    shape: dict[str, Any] | None = None,
) -> None:
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([TEXT], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    if shape is None:
        shape = {
            "hidden_size": hidden, "intermediate_size": hidden * 2, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        }  # fmt: skip
    config = getattr(transformers, arch)(
        **{
            "vocab_size": tok.get_vocab_size(),
            "max_position_embeddings": 2048,
            "bos_token_id": fast.bos_token_id,
            "eos_token_id": fast.eos_token_id,
            "pad_token_id": fast.pad_token_id,
            "tie_word_embeddings": True,
            **shape,
        }
    )
    model = AutoModelForCausalLM.from_config(config).to(getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random-weight Llama (HF format).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", default="LlamaConfig", help="a transformers config class")
    parser.add_argument("--config-json", help="the model's shape as JSON (replaces the shape flags)")
    a = parser.parse_args()
    write(
        a.out,
        layers=a.layers,
        hidden=a.hidden,
        heads=a.heads,
        kv_heads=a.kv_heads,
        head_dim=a.head_dim,
        vocab=a.vocab,
        dtype=a.dtype,
        seed=a.seed,
        arch=a.arch,
        shape=json.loads(a.config_json) if a.config_json else None,
    )


if __name__ == "__main__":
    main()
