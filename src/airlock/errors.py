"""One error hierarchy for airlock; every error carries a message a user can act on.

    AirlockError                      exit code 1 unless a subclass says otherwise
    ├── ConfigError                   a spec, flag or setting is wrong (exit 2)
    │   └── SpecError                 airlock.yaml does not parse or validate
    ├── EngineError                   an engine cannot be found, started or reached (exit 3)
    │   ├── EngineNotFoundError       its binary or Python environment is missing
    │   └── EngineStartError          it exited or timed out before it was ready (carries its log tail)
    ├── KeyStoreError                 the API key database (exit 4)
    │   └── UnknownKeyError           no key by that name
    ├── ModelNotFoundError            a model name that no spec, store or package holds (exit 5)
    ├── PlanError                     capacity and compatibility planning (exit 6)
    │   ├── ModelFactsError           config.json, a safetensors header or GGUF metadata is missing or wrong
    │   └── CannotStartError          the plan says the model cannot start on that hardware (carries reasons)
    ├── BenchError                    load tests: `airlock bench` (exit 7)
    │   ├── EndpointError             the endpoint cannot be reached, or refuses the first request
    │   ├── DatasetError              a prompt dataset (JSONL) is missing or has a bad line
    │   └── ResultsError              a results file is missing, malformed or from another version
    ├── BundleError                   packing, verifying or installing a transfer bundle (exit 10)
    │   ├── BundleFormatError         not a bundle, or its manifest or a volume index does not parse (11)
    │   ├── SignatureError            no signature, a wrong key or a tampered manifest (12)
    │   ├── UnsafePathError           `..`, an absolute path or a link that leaves its root (13)
    │   ├── IntegrityError            a blob whose hash or size is wrong: corrupt or truncated (14)
    │   ├── UnlistedFileError         a file on a volume that the manifest does not list (15)
    │   ├── MissingVolumeError        volumes of the set are not mounted (yet) (16)
    │   ├── UnsafeWeightsError        pickle weights, or a malformed safetensors/GGUF header (17)
    │   ├── SourceError               a model, wheel or file to pack cannot be read or fetched (18)
    │   └── NoSpaceError              the disk filled while packing or installing (19)
    ├── StoreError                    the model store lacks something, or is locked or damaged (20)
    ├── ImageBuildError               a step of `airlock image build` failed (mmdebstrap, pip, umoci) (21)
    ├── AuditChainError               the audit log's hash chain is broken: a line edited, removed or reordered (22)
    ├── DeployError                   a deployment cannot be rendered or started: an image missing, a daemon down (23)
    └── AcceptanceError               `airlock accept check` ran and a check failed (40; the signed report says which)

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
        if not self.hint:
            return self.message
        return f"{self.message}\n({self.hint})" if "\n" in self.message else f"{self.message} ({self.hint})"


class ConfigError(AirlockError):
    exit_code = 2


class SpecError(ConfigError):
    """airlock.yaml is wrong; the message has one line per problem, each naming file, line, column and
    key (``problems`` holds them one by one: ``airlock.spec.SpecProblem``)."""

    def __init__(self, message: str, *, problems: tuple[object, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems


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


class PlanError(AirlockError):
    exit_code = 6


class ModelFactsError(PlanError):
    """A model's own files (config.json, safetensors headers, GGUF metadata) are missing or malformed."""


class CannotStartError(PlanError):
    """The plan says the model cannot start; ``reasons`` lists why and ``suggestions`` what would fit."""

    def __init__(
        self,
        message: str,
        *,
        reasons: tuple[str, ...] = (),
        suggestions: tuple[str, ...] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.reasons = reasons
        self.suggestions = suggestions


class BenchError(AirlockError):
    exit_code = 7


class EndpointError(BenchError):
    """The endpoint under test cannot be reached, or its first request fails (wrong model, key, route)."""


class DatasetError(BenchError):
    """A prompt dataset is missing or a line of it is not a prompt; the message names file and line."""


class ResultsError(BenchError):
    """A results file given to ``bench compare`` or ``bench report`` cannot be read as bench results."""


class BundleError(AirlockError):
    """Packing, verifying or installing a bundle failed; ``problems`` lists each one found (may be empty)."""

    exit_code = 10

    def __init__(self, message: str, *, problems: tuple[str, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems


class BundleFormatError(BundleError):
    exit_code = 11


class SignatureError(BundleError):
    exit_code = 12


class UnsafePathError(BundleError):
    exit_code = 13


class IntegrityError(BundleError):
    exit_code = 14


class UnlistedFileError(BundleError):
    exit_code = 15


class MissingVolumeError(BundleError):
    exit_code = 16


class UnsafeWeightsError(BundleError):
    exit_code = 17


class SourceError(BundleError):
    exit_code = 18


class NoSpaceError(BundleError):
    exit_code = 19


class StoreError(AirlockError):
    exit_code = 20


class ImageBuildError(AirlockError):
    """A step of ``airlock image build`` failed; the message names the step and its last output lines."""

    exit_code = 21


class AuditChainError(AirlockError):
    """The audit chain is broken: a line was edited, removed or reordered (``airlock audit verify``)."""

    exit_code = 22


class DeployError(AirlockError):
    """A deployment cannot be rendered or started: an image missing, a daemon down, a port taken."""

    exit_code = 23


class AcceptanceError(AirlockError):
    """``airlock accept check`` ran and a check failed: an answer differs, a model is slow or silent,
    the audit chain is broken, or something tried to reach the outside (the signed report says which)."""

    exit_code = 40
