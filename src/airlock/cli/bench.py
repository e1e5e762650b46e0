"""``airlock bench``: load-test an OpenAI-compatible endpoint; compare and report results files.

    airlock bench URL [--concurrency 1,4,16 | --rate 2,8] [--requests N] [--duration 30s] ...
    airlock bench compare A.json B.json [--html cmp.html]
    airlock bench report A.json [B.json ...] --output report.html

``bench URL`` is short for ``bench run URL``: the group sends anything that is not one of its
sub-commands to ``run``, so both spellings work. The API key comes from ``--api-key``, else
``AIRLOCK_API_KEY``, else ``OPENAI_API_KEY`` (as the openai SDK reads it); it is never written to
the results.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from airlock.bench.options import Arrival, Endpoint  # light: typer reads these choices on every start
from airlock.cli.output import err, out
from airlock.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

    from airlock.bench.options import Load
    from airlock.bench.results import BenchResults, Summary


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

_HELP_ENDPOINT = "chat (/chat/completions) or completions (/completions)."


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


def _ms(summary: Summary | None) -> str:
    """``p50 / p99`` in milliseconds."""
    if summary is None:
        return "–"
    return " / ".join(
        f"{v * 1000:,.0f}" if v >= 1 else f"{v * 1000:,.1f}" for v in (summary.p50, summary.p99)
    )


def results_table(results: BenchResults) -> Table:
    """The per-level table printed after a run (and by ``bench report``)."""
    from rich.table import Table

    slo = any(lv.goodput is not None for lv in results.levels)
    table = Table(title=f"{results.info.model} at {results.info.url}", title_justify="left")
    table.add_column("load", no_wrap=True)
    for name in ("ok", "failed", "req/s", "out tok/s", "TTFT ms", "ITL ms", "E2E ms"):
        table.add_column(name, justify="right", no_wrap=True)
    if slo:
        table.add_column("goodput", justify="right", no_wrap=True)
    for lv in results.levels:
        cells = [
            lv.label, str(lv.ok), f"[red]{lv.failed}[/]" if lv.failed else "0", f"{lv.request_throughput:.2f}",
            f"{lv.output_throughput:,.1f}", _ms(lv.ttft), _ms(lv.itl), _ms(lv.e2e),
        ]  # fmt: skip
        if slo:
            cells.append(f"{lv.goodput or 0:.2f}/s ({lv.slo_attainment or 0:.0%})")
        table.add_row(*cells)
    table.caption = "latencies: p50 / p99 in ms (ITL per token); tokens from the server's usage"
    return table


def _show(table: Table) -> None:
    """Print a table; piped output (CI logs, files) gets room for every column rather than 80."""
    from rich.console import Console

    wide = out if out.is_terminal else Console(highlight=False, width=160)
    wide.print(table)


def _print_errors(results: BenchResults) -> None:
    for lv in results.levels:
        for kind, count in lv.errors.items():
            example = lv.error_examples.get(kind, "")
            err.print(
                f"[red]{lv.label}[/]: {count} x {kind}" + (f" (first: {example[:160]})" if example else "")
            )


def _save(results: BenchResults, stem: Path, html: bool) -> None:
    from airlock.bench.results import save_results

    written = [save_results(results, stem.with_suffix(".json"))]
    if html:
        from airlock.bench.html_report import write_report

        written.append(write_report([(stem.name, results)], stem.with_suffix(".html")))
    err.print("wrote " + ", ".join(str(p) for p in written))


@app.command("run")
def run(
    url: Annotated[str, typer.Argument(help="The API base, e.g. http://127.0.0.1:8000/v1 (/v1 is added to a bare host).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name (default: the endpoint's only model).")] = None,
    concurrency: Annotated[str | None, typer.Option("--concurrency", "-c", help="Closed loop: users per level, e.g. 1,4,16,64 (default 1,4,16).")] = None,
    rate: Annotated[str | None, typer.Option("--rate", "-r", help="Open loop: requests per second per level, e.g. 2,8.")] = None,
    arrival: Annotated[Arrival, typer.Option(help="Open-loop arrivals: poisson or constant.")] = "poisson",
    requests: Annotated[int | None, typer.Option("--requests", "-n", help="Stop each level after this many requests.")] = None,
    duration: Annotated[str | None, typer.Option("--duration", "-d", help="Stop each level after this long, e.g. 30s, 2m (default 30s without --requests).")] = None,
    prompt_tokens: Annotated[int, typer.Option(help="Synthetic prompt length in tokens (sized with the server's own count).")] = 256,
    output_tokens: Annotated[int, typer.Option(help="max_tokens of each request.")] = 128,
    dataset: Annotated[str | None, typer.Option(help="Prompts from a JSONL file ({'prompt': ...} or {'messages': [...]}) or builtin:chat.")] = None,
    slo: Annotated[str | None, typer.Option(help="Objectives for goodput, e.g. ttft=500ms,itl=50ms,e2e=10s.")] = None,
    endpoint: Annotated[Endpoint, typer.Option(help=_HELP_ENDPOINT)] = "chat",
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Ask the server to always generate max_tokens (vLLM, llama.cpp).")] = False,
    extra_body: Annotated[str | None, typer.Option(help="JSON merged into every request, e.g. '{\"temperature\": 0}'.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Bearer key (default: $AIRLOCK_API_KEY, then $OPENAI_API_KEY).", show_default=False)] = None,
    timeout: Annotated[str, typer.Option(help="Give up on one request after this long.")] = "300s",
    warmup: Annotated[int, typer.Option(help="Requests sent and discarded before the first level.")] = 0,
    seed: Annotated[int | None, typer.Option(help="Seed for prompts and arrivals (default: a fresh one, kept in the results).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Results path without extension: writes .json and .html (default airlock-bench-DATE-TIME).")] = None,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Also write the HTML report.")] = True,
) -> None:  # fmt: skip
    """Load-test URL, level by level; print a table and write JSON results and an HTML report."""
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
    stem = _stem(output)
    try:
        with LiveProgress(err) as progress:
            results = run_bench(options, progress)
    except BenchInterrupted as exc:
        if exc.results.levels:
            _show(results_table(exc.results))
            _save(exc.results, stem, html)
        raise
    _show(results_table(results))
    _print_errors(results)
    _save(results, stem, html)


def _runs(files: list[Path]) -> list[tuple[str, BenchResults]]:
    from airlock.bench.compare import run_labels
    from airlock.bench.results import load_results

    loaded = [load_results(f) for f in files]
    return list(zip(run_labels([f.stem for f in files]), loaded, strict=True))


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
    from rich.table import Table

    from airlock.bench.compare import compare_runs

    runs = _runs(files)
    comparison = compare_runs(runs)
    table = Table(title="airlock bench compare", title_justify="left")
    table.add_column("load")
    table.add_column("metric")
    for label in comparison.labels:
        table.add_column(label, justify="right")
    for label in comparison.labels[1:]:
        table.add_column(f"Δ {label}", justify="right")
    previous = None
    for row in comparison.rows:
        values = ["–" if v is None else f"{v:,.{row.metric.digits}f}" for v in row.values]
        changes = []
        for change in row.changes:
            better = row.better(change)
            style = "" if better is None else ("green" if better else "red")
            text = "–" if change is None else f"{change:+.1%}"
            changes.append(f"[{style}]{text}[/]" if style else text)
        table.add_row(row.level if row.level != previous else "", row.metric.title, *values, *changes,
                      end_section=False)  # fmt: skip
        previous = row.level
    _show(table)
    for line in comparison.differences:
        err.print(f"[yellow]not the same[/]: {line}")
    if html is not None:
        from airlock.bench.html_report import write_report

        err.print(f"wrote {write_report(runs, html)}")


@app.command("report")
def report(
    files: Annotated[list[Path], typer.Argument(help="One or more results files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the HTML report.")],
) -> None:
    """Draw the HTML report (plots, tables) again from results files, one run or several overlaid."""
    from airlock.bench.html_report import write_report

    runs = _runs(files)
    for _, results in runs:
        _show(results_table(results))
    err.print(f"wrote {write_report(runs, output)}")
