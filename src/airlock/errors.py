"""One error hierarchy for airlock; every error carries a message a user can act on.

    AirlockError                      exit code 1 unless a subclass says otherwise
    ├── ConfigError                   a spec, flag or setting is wrong (exit 2)
    │   └── SpecError                 airlock.yaml does not parse or validate
    ├── EngineError                   an engine cannot be found, started or reached (exit 3)
    │   ├── EngineNotFoundError       its binary or Python environment is missing
    │   └── EngineStartError          it exited or timed out before it was ready (carries its log tail)
    ├── KeyStoreError                 the API key database (exit 4)
    │   └── UnknownKeyError           no key by that name
    └── ModelNotFoundError            a model name that no spec, store or package holds (exit 5)

The CLI turns any AirlockError into one line on stderr and its exit code; a traceback is shown only
with ``--debug``. Third-party exceptions are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class AirlockError(Exception):
    """Root of every error airlock raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(AirlockError):
    exit_code = 2


class SpecError(ConfigError):
    pass


class EngineError(AirlockError):
    exit_code = 3


class EngineNotFoundError(EngineError):
    pass


class EngineStartError(EngineError):
    """An engine exited or timed out before it was ready; ``log_tail`` holds its last lines."""

    def __init__(self, message: str, *, log_tail: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log_tail = log_tail


class KeyStoreError(AirlockError):
    exit_code = 4


class UnknownKeyError(KeyStoreError):
    pass


class ModelNotFoundError(AirlockError):
    exit_code = 5
