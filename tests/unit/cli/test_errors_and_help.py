"""What every command shares: one-line errors that print the user's text as typed, lines that are
never broken inside a path, help that reads at 80 columns, ``--version``, and logs that only look
like logs with ``--debug``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from airlock import __version__
from airlock.cli.main import AirlockGroup, app

AIRLOCK = [sys.executable, "-m", "airlock.cli.main"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "AIRLOCK_HOME": str(tmp_path / "home"), "COLUMNS": "80"}


def airlock(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AIRLOCK, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


# 1. Text from the user or the disk is printed as typed: no markup, no emoji.


def test_an_error_prints_a_path_with_brackets_and_colons_as_typed(
    env: dict[str, str], tmp_path: Path
) -> None:
    name = str(tmp_path / "h100-80gb:x: [bold]site[/bold] :smile:.yaml")
    done = airlock(env, "spec", "check", name)
    assert done.returncode == 2
    assert done.stderr == f"error: {name}: no such file\n"
    assert done.stdout == ""


def test_the_consoles_print_emoji_codes_and_brackets_literally(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.markup import escape

    from airlock.cli.output import err, out

    out.print(f"gpu {escape('h100-80gb:x:')} and {escape('[red]x[/red]')}")
    err.print("model :smile:", markup=False)
    captured = capsys.readouterr()
    assert captured.out == "gpu h100-80gb:x: and [red]x[/red]\n"
    assert captured.err == "model :smile:\n"


# 2. A long path or command is one line, whatever the width; tables still fit.


def test_a_long_path_is_never_broken_and_tables_fit_80_columns(env: dict[str, str], tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 5) / "airlock.schema.json"
    deep.parent.mkdir(parents=True)
    done = airlock(env, "spec", "schema", "--out", str(deep))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"# yaml-language-server: $schema={deep}\n"
    assert f"wrote {deep};" in done.stderr
    for name in ("alice", "a-very-long-key-name-for-the-nightly-ci-runner"):
        made = airlock(env, "keys", "create", name, "--models", "default,smollm2-135m-instruct")
        assert made.returncode == 0, made.stderr
    listed = airlock(env, "keys", "list")
    lines = listed.stdout.splitlines()
    assert len(lines) > 4
    assert max(len(line) for line in lines) <= 80


# 4 (the CLI side). `airlock spec check` and `airlock spec schema`.


def test_spec_check_says_ok_or_every_problem_with_its_line(env: dict[str, str], tmp_path: Path) -> None:
    good = tmp_path / "airlock.yaml"
    good.write_text("models:\n  - {name: smollm2, gguf: m.gguf, engine: {kind: llamacpp}}\n")
    done = airlock(env, "spec", "check", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "airlock.yaml: OK (1 model: smollm2; gateway 127.0.0.1:8000)\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "gateway: {prot: 1}\nmodels:\n  - {name: a, gguf: m.gguf, engine: {kind: llamacpp, paralel: 2}}\n"
    )
    done = airlock(env, "spec", "check", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: bad.yaml:1:11: gateway.prot: unknown key 'prot'; did you mean 'port'?",
        "error: bad.yaml:3:54: models[0].engine.paralel: unknown key 'paralel'; did you mean 'parallel'?",
        "hint: every key, with examples: docs/spec.md; `airlock spec schema` for editors",
    ]


def test_spec_schema_prints_json_schema(env: dict[str, str]) -> None:
    import json

    done = airlock(env, "spec", "schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) >= {"gateway", "models", "hardware", "wheels", "files"}


# 5. Help at 80 columns, usage errors as one line, --version.


def _commands(group: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(group, "commands", {}).items()):
        if not sub.hidden:
            yield from _commands(sub, (*path, name))


def test_every_help_reads_plainly_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer.main

    monkeypatch.setenv("COLUMNS", "80")
    runner = CliRunner()
    paths = list(_commands(typer.main.get_command(app)))
    assert ("pack",) in paths and ("bench", "run") in paths and ("spec", "check") in paths
    for path in paths:
        shown = runner.invoke(app, [*path, "--help"])
        assert shown.exit_code == 0, (path, shown.output)
        text = shown.output
        where = " ".join(("airlock", *path))
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert f"Usage: {where}" in usage and "{" not in usage, usage
        for wrong in (
            "<bool>",
            "<path>",
            "<str>",
            "<int",
            "<float",
            "list[",
            " range",
            "x>=",
            "<=x",
            "…",
        ):
            assert wrong not in text, (where, wrong, text)
        assert max(len(line) for line in text.splitlines()) <= 80, where


def _demo_app() -> typer.Typer:
    """A command with one parameter of each kind, on airlock's root group."""
    demo = typer.Typer(cls=AirlockGroup, add_completion=False)

    @demo.command()
    def pack(
        spec: Annotated[Path, typer.Argument(help="The spec.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder.")],
        trust: Annotated[list[Path] | None, typer.Option(help="Repeatable.")] = None,
        parity: Annotated[float, typer.Option(min=0, max=100, help="Percent.")] = 0,
        workers: Annotated[int, typer.Option(min=1, help="Threads.")] = 2,
        no_sign: Annotated[bool, typer.Option("--no-sign", help="Do not sign.")] = False,
        sign: Annotated[Path | None, typer.Option(help="Key (default: " + LONG_WORD + ").")] = None,
    ) -> None:
        """Pack."""

    @demo.command()
    def other() -> None:
        """Another command, so that pack is a sub-command."""

    return demo


LONG_WORD = "$AIRLOCK_HOME/signing/a-key-file-with-a-very-long-name-indeed.key"


def test_help_names_values_plainly_and_folds_long_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = CliRunner().invoke(_demo_app(), ["pack", "--help"]).output
    assert "Usage: root pack [OPTIONS] SPEC" in text
    assert re.search(r"\* +SPEC +PATH +The spec", text)
    assert re.search(r"--out +-o +PATH ", text)
    assert re.search(r"--trust +PATH ", text)
    assert re.search(r"--parity +0-100 ", text)
    assert re.search(r"--workers +INTEGER >= 1 ", text)
    assert re.search(r"--no-sign +Do not sign", text)  # a flag has no type
    assert re.search(r"--help +Show this", text)
    assert "…" not in text
    folded = "".join(line.strip("│ ").split("  ")[-1].strip() for line in text.splitlines())
    assert LONG_WORD in folded  # the long word folds onto the next line, never cut off


def test_version_flag_and_command(env: dict[str, str]) -> None:
    for args in (["--version"], ["version"]):
        done = airlock(env, *args)
        assert (done.returncode, done.stdout, done.stderr) == (0, f"{__version__}\n", "")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--verison"],
            "error: No such option: --verison (Possible options: --version) (see `airlock --help`)",
        ),
        (["pack"], "error: Missing argument 'SPEC'. (see `airlock pack --help`)"),
        (["serve", "--port", "http"], "error: Invalid value for '--port': must be a valid integer (see"),
    ],
)
def test_a_usage_error_is_one_line_with_the_help_to_read(
    env: dict[str, str], args: list[str], line: str
) -> None:
    done = airlock(env, *args)
    assert done.returncode == 2
    assert done.stderr.startswith(line)
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "╭" not in done.stderr and done.stdout == ""


# 6. Logs: readable warnings without --debug; the log format only with it.

_LOGS = """
import logging, sys
from airlock.cli.main import setup_logging
setup_logging(sys.argv[1] == "debug")
log = logging.getLogger("airlock.serve")
log.info("plan: smollm2: fits")
log.warning("engine [b]x[/b] :x: restarts")
"""


def test_logs_are_plain_warning_lines_unless_debug() -> None:
    plain = subprocess.run([sys.executable, "-c", _LOGS, "plain"], capture_output=True, text=True, timeout=60)
    assert plain.stderr == "warning: engine [b]x[/b] :x: restarts\n"
    debug = subprocess.run([sys.executable, "-c", _LOGS, "debug"], capture_output=True, text=True, timeout=60)
    lines = debug.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" INFO airlock.serve: plan: smollm2: fits")
    assert lines[1].endswith(" WARNING airlock.serve: engine [b]x[/b] :x: restarts")
