"""Weight-file checks made at pack time: no pickle unless asked, and well-formed headers.

* Pickle-based formats (``.bin .pt .pth .ckpt .pkl .pickle``) can run code when loaded; pack refuses
  them unless ``--allow-pickle``. Most Hugging Face repos carry safetensors beside them: add
  ``ignore: ["*.bin", "*.pt"]`` to the model's ``hf`` source.
* safetensors headers are validated by the ``safetensors`` library itself (the reference reader):
  the header parses, every tensor's dtype, shape and offsets agree, and the tensors cover the file.
* GGUF headers are read by :func:`airlock.formats.gguf.read_gguf` (the header only, bounded), and
  :func:`check_gguf` adds: every tensor aligned, whole blocks of its type, and inside the file.

Example::

    check_weights(Path("model.safetensors"), "model.safetensors")  # raises UnsafeWeightsError
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from airlock.errors import ModelFactsError, UnsafeWeightsError
from airlock.formats.gguf import read_gguf

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})


def pickle_files(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if Path(p).suffix.lower() in PICKLE_SUFFIXES]


def refuse_pickle(artifact: str, paths: Iterable[str]) -> None:
    found = pickle_files(paths)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise UnsafeWeightsError(
            f"{artifact}: pickle-based files can run code when loaded: {shown}",
            problems=tuple(found),
            hint="ignore them in the spec (ignore: ['*.bin', '*.pt']) or pass --allow-pickle",
        )


def check_weights(path: Path, logical: str) -> None:
    """Check the header of a safetensors or GGUF file; other files pass."""
    suffix = Path(logical).suffix.lower()
    if suffix == ".safetensors":
        check_safetensors(path, logical)
    elif suffix == ".gguf":
        check_gguf(path, logical)


def check_safetensors(path: Path, logical: str) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            fh.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnsafeWeightsError(f"{logical}: not a well-formed safetensors file: {exc}") from exc


def check_gguf(path: Path, logical: str) -> None:
    """The header parses, and every tensor is aligned, whole blocks, and inside the file."""
    try:
        gguf = read_gguf(path)
    except ModelFactsError as exc:
        why = exc.message.removeprefix(f"{path}: ")
        raise UnsafeWeightsError(f"{logical}: not a well-formed GGUF file: {why}") from exc

    def bad(why: str) -> UnsafeWeightsError:
        return UnsafeWeightsError(f"{logical}: not a well-formed GGUF file: {why}")

    for t in gguf.tensors:
        if not t.whole_blocks:
            raise bad(f"tensor {t.name!r}: {t.shape} elements are not whole blocks of {t.ggml_type}")
        if t.offset % gguf.alignment:
            raise bad(f"tensor {t.name!r}: offset {t.offset} is not aligned to {gguf.alignment}")
        end = gguf.data_start + t.offset + t.nbytes
        if end > gguf.size:
            raise bad(
                f"tensor {t.name!r} ends at byte {end}, past the end of the file ({gguf.size} bytes): "
                "truncated or damaged"
            )
