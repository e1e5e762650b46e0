"""``airlock bench``: load-test an OpenAI-compatible endpoint; compare and report results files.

    airlock bench URL [--concurrency 1,4,16 | --rate 2,8] [--requests N] [--duration 30s] ...
    airlock bench compare A.json B.json [--html cmp.html]
    airlock bench report A.json [B.json ...] --out report.html

``bench URL`` is short for ``bench run URL``: the group sends anything that is not one of its
sub-commands to ``run``, so both spellings work. The API key comes from ``--api-key``, else
``AIRLOCK_API_KEY``, else ``OPENAI_API_KEY`` (as the openai SDK reads it); it is never written to
the results.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperGroup

from airlock.bench.options import Arrival, Endpoint  # light: typer reads these choices on every start
from airlock.cli.output import err, out
from airlock.common.words import counted
from airlock.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table
    from rich.text import Text

    from airlock.bench.compare import Comparison
    from airlock.bench.options import Load
    from airlock.bench.results import BenchResults, LevelResult, Summary


class _RunByDefault(TyperGroup):
    """A group whose unknown first word is ``run``'s argument: ``bench URL`` means ``bench run URL``."""

    # ctx is typer's vendored click Context, whose module is private: typed as Any on purpose.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    help="Load-test any OpenAI-compatible endpoint; compare and report results.",
    no_args_is_help=True,
)

T = TypeVar("T")

_HELP_ENDPOINT = "chat (/chat/completions) or completions (/completions)."


OUTPUT_RENAMED = (
    "--output is now --out (as in pack, rebuild and inventory); --output goes in the next release"
)
C_RENAMED = "-c is now --concurrency (-c is --config in serve and plan); -c goes in the next release"


def _renamed(old: T | None, new: T | None, old_flag: str, new_flag: str, note: str) -> T | None:
    """A renamed flag's value: the new spelling's, else the old one's with a one-line note on stderr."""
    if old is None:
        return new
    if new is not None:
        raise ConfigError(f"give {new_flag} once ({old_flag} is its old spelling)")
    err.print(note, markup=False)
    return old


def _api_key(flag: str | None) -> str | None:
    return flag or os.environ.get("AIRLOCK_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def _loads(concurrency: str | None, rate: str | None) -> tuple[Load, ...]:
    from airlock.bench.options import Load, parse_levels

    if concurrency and rate:
        raise ConfigError("give --concurrency or --rate, not both")
    if rate:
        return tuple(Load("rate", v) for v in parse_levels(rate, "--rate"))
    return tuple(Load("concurrency", v) for v in parse_levels(concurrency or "1,4,16", "--concurrency"))


def _extra_body(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    import orjson

    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--extra-body: not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError("--extra-body: must be a JSON object, e.g. '{\"temperature\": 0}'")
    return value


def _stem(output: Path | None) -> Path:
    if output is None:
        return Path(f"airlock-bench-{dt.datetime.now():%Y%m%d-%H%M%S}")
    return output.with_suffix("") if output.suffix in (".json", ".html") else output


DASH = "–"  # a value a run does not have (no successful request, no SLO, a level another run lacks)


def _ms(seconds: float) -> str:
    """Milliseconds, as short as the value allows: ``1,204``, ``745``, ``32.5``."""
    ms = seconds * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}"


def _p50_p99(summary: Summary | None) -> str:
    return DASH if summary is None else f"{_ms(summary.p50)} / {_ms(summary.p99)}"


def _fits(table: Table, console: Console) -> bool:
    """Whether ``table`` prints on ``console`` with every cell whole (no wrapping, no cutting)."""
    from rich.measure import Measurement

    wide = console.options.update_width(10_000)
    return Measurement.get(console, wide, table).maximum <= console.width


def _wrapped(text: str) -> Text:
    """A title or caption that wraps at the table's width, also on a soft-wrapping console."""
    from rich.text import Text

    wrapped = Text.from_markup(text, overflow="fold")
    wrapped.no_wrap = False
    return wrapped


def _table(title: str, *, compact: bool = False) -> Table:
    from rich.table import Table

    table = Table(title=_wrapped(title), title_justify="left", caption_justify="left")
    if compact:  # no borders: two spaces between columns
        table.box, table.pad_edge, table.header_style = None, False, "bold underline"
    return table


def _column(table: Table, header: str, *, left: bool = False) -> None:
    # overflow="fold": on a console too narrow for the table a cell breaks onto a second line;
    # it is never cut with an ellipsis (a cut number is a wrong number).
    table.add_column(header, justify="left" if left else "right", overflow="fold")


def _failed(level: LevelResult) -> str:
    return f"[red]{level.failed}[/]" if level.failed else "0"


def _goodput(level: LevelResult) -> str:
    if level.goodput is None:
        return DASH
    return f"{level.goodput:.2f}/s ({level.slo_attainment or 0:.0%})"


def _slo_note(results: BenchResults) -> str:
    objectives = ", ".join(f"{name.upper()} <= {_ms(s)} ms" for name, s in results.info.slo.items())
    return f"goodput: requests/s that met {objectives} (share of all requests)"


def results_tables(results: BenchResults, console: Console) -> list[Table]:
    """The per-level numbers printed after a run (and by ``bench report``), fitted to ``console``.

    One table where the console is wide enough; otherwise two narrower ones (throughput, then
    latency percentiles), so that an 80-column terminal or a pipe shows every number whole.
    """
    info = results.info
    slo = any(lv.goodput is not None for lv in results.levels)
    notes = ["ms: milliseconds; ITL per output token; tokens from the server's usage"]
    if slo:
        notes.append(_slo_note(results))

    one = _table(escape(f"{info.model} at {info.url}"))
    _column(one, "load", left=True)
    for header in (
        "ok",
        "failed",
        "req/s",
        "out tok/s",
        "TTFT ms\np50 / p99",
        "ITL ms\np50 / p99",
        "E2E ms\np50 / p99",
    ):
        _column(one, header)
    if slo:
        _column(one, "goodput")
    for lv in results.levels:
        cells = [
            escape(lv.label), str(lv.ok), _failed(lv), f"{lv.request_throughput:.2f}", f"{lv.output_throughput:,.1f}",
            _p50_p99(lv.ttft), _p50_p99(lv.itl), _p50_p99(lv.e2e),
        ]  # fmt: skip
        one.add_row(*cells, *([_goodput(lv)] if slo else []))
    one.caption = _wrapped("\n".join(notes))
    if _fits(one, console):
        return [one]

    split = _split(results, notes)
    if all(_fits(t, console) for t in split):
        return split
    return _split(results, notes, compact=True)  # no borders; a console narrower still folds cells


def _split(results: BenchResults, notes: list[str], *, compact: bool = False) -> list[Table]:
    """The numbers as two tables: throughput (and goodput), then latency percentiles."""
    slo = len(notes) > 1
    rates = _table(escape(f"{results.info.model} at {results.info.url}"), compact=compact)
    for header in ("load", "ok", "failed", "req/s", "out tok/s", *(["goodput"] if slo else [])):
        _column(rates, header, left=header == "load")
    for lv in results.levels:
        cells = [
            escape(lv.label),
            str(lv.ok),
            _failed(lv),
            f"{lv.request_throughput:.2f}",
            f"{lv.output_throughput:,.1f}",
        ]
        rates.add_row(*cells, *([_goodput(lv)] if slo else []))
    if slo:
        rates.caption = _wrapped(notes[1])
    latency = _table("latency, ms", compact=compact)
    _column(latency, "load", left=True)
    for name in ("TTFT", "ITL", "E2E"):
        for pct in ("p50", "p99"):
            _column(latency, f"{name}\n{pct}")
    for lv in results.levels:
        values = [
            DASH if summary is None else _ms(getattr(summary, pct))
            for summary in (lv.ttft, lv.itl, lv.e2e)
            for pct in ("p50", "p99")
        ]
        latency.add_row(escape(lv.label), *values)
    latency.caption = _wrapped(notes[0])
    return [rates, latency]


def _show(*renderables: RenderableType) -> None:
    """Print on stdout at its width: the terminal's, else ``COLUMNS``, else 80 (rich's rules)."""
    for renderable in renderables:
        out.print(renderable)


def _print_errors(results: BenchResults) -> None:
    for lv in results.levels:
        for kind, count in lv.errors.items():
            example = lv.error_examples.get(kind, "")
            first = f" (first: {escape(example[:160])})" if example else ""
            err.print(
                f"[red]{escape(lv.label)}[/]: {counted(count, 'request')} failed with {escape(kind)}{first}"
            )


def _save(results: BenchResults, stem: Path, html: bool) -> None:
    from airlock.bench.results import save_results

    written = [save_results(results, stem.with_suffix(".json"))]
    if html:
        from airlock.bench.html_report import write_report

        written.append(write_report([(stem.name, results)], stem.with_suffix(".html")))
    err.print("wrote " + ", ".join(str(p) for p in written), markup=False)


@app.command("run")
def run(
    url: Annotated[str, typer.Argument(help="The API base, e.g. http://127.0.0.1:8000/v1 (/v1 is added to a bare host).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name (default: the endpoint's only model).")] = None,
    concurrency: Annotated[str | None, typer.Option("--concurrency", help="Closed loop: users per level, e.g. 1,4,16,64 (default 1,4,16).")] = None,
    rate: Annotated[str | None, typer.Option("--rate", "-r", help="Open loop: requests per second per level, e.g. 2,8.")] = None,
    arrival: Annotated[Arrival, typer.Option(help="Open-loop arrivals: poisson or constant.")] = "poisson",
    requests: Annotated[int | None, typer.Option("--requests", "-n", help="Stop each level after this many requests.")] = None,
    duration: Annotated[str | None, typer.Option("--duration", "-d", help="Stop each level after this long, e.g. 30s, 2m (default 30s without --requests).")] = None,
    prompt_tokens: Annotated[int, typer.Option(help="Synthetic prompt length in tokens (sized with the server's own count).")] = 256,
    output_tokens: Annotated[int, typer.Option(help="max_tokens of each request.")] = 128,
    dataset: Annotated[str | None, typer.Option(help="Prompts from a JSONL file ({'prompt': ...} or {'messages': [...]}) or builtin:chat.")] = None,
    slo: Annotated[str | None, typer.Option(help="Objectives for goodput, each with its unit (ms or s), e.g. ttft=500ms,itl=50ms or e2e=10s.")] = None,
    endpoint: Annotated[Endpoint, typer.Option(help=_HELP_ENDPOINT)] = "chat",
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Ask the server to always generate max_tokens (vLLM, llama.cpp).")] = False,
    extra_body: Annotated[str | None, typer.Option(help="JSON merged into every request, e.g. '{\"temperature\": 0}'.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Bearer key (default: $AIRLOCK_API_KEY, then $OPENAI_API_KEY).", show_default=False)] = None,
    timeout: Annotated[str, typer.Option(help="Give up on one request after this long.")] = "300s",
    warmup: Annotated[int, typer.Option(help="Requests sent and discarded before the first level.")] = 0,
    seed: Annotated[int | None, typer.Option(help="Seed for prompts and arrivals (default: a fresh one, kept in the results).")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Results path without extension: writes .json and .html (default: airlock-bench- and the date and time).")] = None,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Also write the HTML report.")] = True,
    old_c: Annotated[str | None, typer.Option("-c", hidden=True, help="Old short form of --concurrency.")] = None,
    old_output: Annotated[Path | None, typer.Option("--output", hidden=True, help="Old name of --out.")] = None,
) -> None:  # fmt: skip
    """Load-test URL, level by level; print a table and write JSON results and an HTML report."""
    concurrency = _renamed(old_c, concurrency, "-c", "--concurrency", C_RENAMED)
    out_path = _renamed(old_output, out_path, "--output", "--out", OUTPUT_RENAMED)
    from airlock.bench.options import BenchOptions, normalise_url, parse_seconds, parse_slo
    from airlock.bench.options import Slo as SloOptions
    from airlock.bench.runner import BenchInterrupted, run_bench
    from airlock.cli.bench_progress import LiveProgress

    options = BenchOptions(
        url=normalise_url(url),
        loads=_loads(concurrency, rate),
        model=model,
        api_key=_api_key(api_key),
        requests=requests,
        duration_s=parse_seconds(duration, "--duration") if duration else None,
        arrival=arrival,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        dataset=dataset,
        endpoint=endpoint,
        ignore_eos=ignore_eos,
        extra_body=_extra_body(extra_body),
        slo=parse_slo(slo) if slo else SloOptions(),
        timeout_s=parse_seconds(timeout, "--timeout"),
        warmup=warmup,
        **({"seed": seed} if seed is not None else {}),
    )
    stem = _stem(out_path)
    try:
        with LiveProgress(err) as progress:
            results = run_bench(options, progress)
    except BenchInterrupted as exc:
        if exc.results.levels:
            _show(*results_tables(exc.results, out))
            _save(exc.results, stem, html)
        raise
    _show(*results_tables(results, out))
    _print_errors(results)
    _save(results, stem, html)


def _runs(files: list[Path]) -> list[tuple[str, BenchResults]]:
    from airlock.bench.compare import run_labels
    from airlock.bench.results import load_results

    loaded = [load_results(f) for f in files]
    return list(zip(run_labels([f.stem for f in files]), loaded, strict=True))


def _letters(count: int) -> list[str]:
    """A, B, ..., Z, then 27, 28, ...: short column names for runs whose file names do not fit."""
    return [chr(ord("A") + i) if i < 26 else str(i + 1) for i in range(count)]


def _compare_table(comparison: Comparison, names: list[str], runs: list[int], *, compact: bool) -> Table:
    """The runs numbered ``runs`` (the first is the base) side by side, with each one's change against it."""
    table = _table("airlock bench compare", compact=compact)
    _column(table, "load", left=True)
    _column(table, "metric", left=True)
    for i in runs:
        _column(table, names[i])
    for i in runs[1:]:
        _column(table, f"Δ {names[i]}")
    rows = comparison.rows
    for n, row in enumerate(rows):
        values = [DASH if row.values[i] is None else f"{row.values[i]:,.{row.metric.digits}f}" for i in runs]
        changes = []
        for i in runs[1:]:
            change = row.changes[i - 1]
            better = row.better(change)
            text = DASH if change is None else f"{change:+.1%}"
            changes.append(text if better is None else f"[{'green' if better else 'red'}]{text}[/]")
        first = n == 0 or rows[n - 1].level != row.level
        last = n == len(rows) - 1 or rows[n + 1].level != row.level
        table.add_row(escape(row.level) if first else "", row.metric.title, *values, *changes,
                      end_section=last and not compact)  # fmt: skip
    return table


def compare_tables(comparison: Comparison, console: Console) -> tuple[list[str], list[Table]]:
    """(a legend, the tables) for ``bench compare``, fitted to ``console``.

    The runs' names head the columns when the table fits; otherwise letters do, with the legend
    naming each run, and where even that is too wide the runs come a few at a time, each table
    beside the first run (the base every change is against).
    """
    labels = [escape(label) for label in comparison.labels]
    table = _compare_table(comparison, labels, list(range(len(labels))), compact=False)
    if _fits(table, console):
        return [], [table]
    letters = _letters(len(labels))
    legend = [f"{letter}: {label}" for letter, label in zip(letters, comparison.labels, strict=True)]
    others = list(range(1, len(labels)))
    tables: list[Table] = []
    for compact in (False, True):
        for per_table in range(len(others), 0, -1):
            groups = [[0, *others[i : i + per_table]] for i in range(0, len(others), per_table)]
            tables = [_compare_table(comparison, letters, g, compact=compact) for g in groups]
            if all(_fits(t, console) for t in tables):
                return legend, tables
    return legend, tables  # the narrowest layout, on a console narrower still: cells fold


@app.command("compare")
def compare(
    files: Annotated[
        list[Path], typer.Argument(help="Two or more results files; changes are against the first.")
    ],
    html: Annotated[
        Path | None, typer.Option(help="Also write the comparison as an HTML report here.")
    ] = None,
) -> None:
    """Put bench runs side by side, level by level, with the change against the first."""
    if len(files) < 2:
        raise ConfigError("compare needs at least two results files")
    from airlock.bench.compare import compare_runs

    runs = _runs(files)
    comparison = compare_runs(runs)
    legend, tables = compare_tables(comparison, out)
    for line in legend:
        out.print(line, markup=False)
    _show(*tables)
    for line in comparison.differences:
        err.print(f"[yellow]not the same[/]: {escape(line)}")
    if html is not None:
        from airlock.bench.html_report import write_report

        err.print(f"wrote {write_report(runs, html)}", markup=False)


@app.command("report")
def report(
    files: Annotated[list[Path], typer.Argument(help="One or more results files.")],
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the HTML report (required).", show_default=False)] = None,
    old_output: Annotated[Path | None, typer.Option("--output", hidden=True, help="Old name of --out.")] = None,
) -> None:  # fmt: skip
    """Draw the HTML report (plots, tables) again from results files, one run or several overlaid."""
    output = _renamed(old_output, out_path, "--output", "--out", OUTPUT_RENAMED)
    if output is None:
        raise ConfigError("bench report needs --out: where to write the HTML report (e.g. --out report.html)")
    from airlock.bench.html_report import write_report

    runs = _runs(files)
    for _, results in runs:
        _show(*results_tables(results, out))
    err.print(f"wrote {write_report(runs, output)}", markup=False)
