"""What an engine's extra ``args`` already say: the values of the flags plan cares about.

Both spellings count, ``--flag value`` and ``--flag=value``; a flag given twice keeps its last
value, as the engines' own parsers do (the args come last on their command lines, so they win).

Example::

    given_flags(["-c", "4096", "--parallel=2"], {"-c": "ctx_size", "--parallel": "parallel"})
    # {'ctx_size': '4096', 'parallel': '2'}
"""

from __future__ import annotations

from collections.abc import Mapping


def given_flags(args: list[str], names: Mapping[str, str]) -> dict[str, str]:
    """``{name: value}`` for each flag of ``names`` (flag -> name) that ``args`` give."""
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        flag, eq, value = args[i].partition("=")
        if flag in names:
            if not eq and i + 1 < len(args):
                value = args[i + 1]
                i += 1
            found[names[flag]] = value
        i += 1
    return found
