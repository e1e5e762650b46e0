"""The CLI starts without the core: ``airlock --help`` or ``airlock version`` loads no heavy library.

Each check runs in a fresh interpreter (this one has long since imported everything) and reads back
the names in ``sys.modules``. No timing assertion: which modules load is what can be checked, and
it is what made start-up take a second and a half.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Libraries costing tens to hundreds of milliseconds, and the stages' entry points that pull them.
HEAVY = (
    "numpy",
    "gguf",
    "safetensors",
    "aiohttp",
    "uvicorn",
    "uvloop",
    "httptools",
    "prometheus_client",
    "matplotlib",
    "cryptography",
    "zstandard",
    "zfec",
    "huggingface_hub",
    "transformers",
    "airlock.bundle.staging.pack",
    "airlock.bundle.airgap.install",
    "airlock.bundle.airgap.verify",
    "airlock.serving.stack",
    "airlock.gateway.app",
    "airlock.engines.supervisor",
    "airlock.bench.runner",
    "airlock.plan.planner",
)

_LOADED = "import json, sys; print(json.dumps(sorted(sys.modules)), file=sys.stderr)"


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after ``code`` (which may exit, as the CLI does)."""
    script = f"import atexit, json, sys\natexit.register(lambda: exec({_LOADED!r}))\n{code}\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    names: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return set(names)


def _heavy(loaded: set[str]) -> list[str]:
    return [name for name in HEAVY if name in loaded]


def test_importing_the_cli_loads_no_heavy_module() -> None:
    loaded = _modules_after("import airlock.cli.main")
    assert "airlock.cli.main" in loaded
    assert _heavy(loaded) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["version"],
        ["--version"],
        ["signing-key", "--help"],
        ["bench", "--help"],
        ["spec", "--help"],
    ],
)
def test_help_and_version_load_no_heavy_module(argv: list[str]) -> None:
    loaded = _modules_after(f"from airlock.cli.main import run\nrun({argv!r})")
    assert "typer" in loaded
    assert _heavy(loaded) == []


def test_the_check_sees_a_heavy_import() -> None:
    """The helper reads a child's modules truly: a command that imports numpy is caught."""
    assert _heavy(_modules_after("import airlock.formats.gguf\nairlock.formats.gguf.ggml_types()")) == [
        "numpy",
        "gguf",
    ]
