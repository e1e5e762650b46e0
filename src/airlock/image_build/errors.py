"""The image build's one error: a step (mmdebstrap, pip, umoci, a check in the staged root) failed.

It sits under :class:`airlock.errors.AirlockError` like every other error (one line, a hint, an exit
code); it lives here until ``errors.py`` names it.
"""

from __future__ import annotations

from airlock.errors import AirlockError


class ImageBuildError(AirlockError):
    """A step of ``airlock image build`` failed; the message names the step and its last output lines."""

    exit_code = 21
