"""Counts in words, as both sides print them: ``counted(1, "file")`` is "1 file", never "1 files".

Example::

    counted(3, "entry", "entries")  # "3 entries"
    numbers([1, 3])                 # "volumes 1 and 3"
"""

from __future__ import annotations

from collections.abc import Iterable


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, the noun plural unless ``n`` is 1 (``plural`` defaults to noun + "s")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def numbers(values: Iterable[int], noun: str = "volume") -> str:
    """ "volume 2", "volumes 1 and 3", "volumes 1, 2 and 4": numbered things, named in order."""
    items = [str(v) for v in sorted(values)]
    if len(items) <= 1:
        return f"{noun} {''.join(items)}".rstrip()
    return f"{noun}s {', '.join(items[:-1])} and {items[-1]}"
