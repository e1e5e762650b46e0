"""``airlock keys create|list|revoke``: API keys for the gateway.

``create --models`` names the models a key may use; they are checked against the spec that serve
will read (``--config``, else ./airlock.yaml), so a typo is refused rather than making a key that
opens nothing. Without a spec the names are compared with the embedded default model's and only
warned about: the gateway's models are not known yet. ``--scope`` names the routes (chat,
completions, embeddings, models, metrics, admin), ``--expires`` a duration or a date, ``--rpm``,
``--tpm``, ``--tpd`` and ``--concurrency`` the key's limits, which the gateway holds exactly.

Keys live where the spec's ``gateway.database`` says (PostgreSQL), else in ``keys.db`` under
AIRLOCK_HOME. A key works the moment ``create`` returns and stops the moment ``revoke`` does, on
every running gateway. The key store and the settings are imported when a command runs, not when the
CLI starts.
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from airlock.cli.output import err, out
from airlock.errors import ConfigError, KeyStoreError

if TYPE_CHECKING:
    from airlock.gateway.apikeys import ApiKey, KeyStore, KeyUsage

app = typer.Typer(help="Create, list and revoke the gateway's API keys.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The spec whose models --models names and whose gateway.database holds the keys "
        "(default: ./airlock.yaml).",
    ),
]
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _spec_path(config: Path | None) -> Path | None:
    path = config if config is not None else Path("airlock.yaml")
    return path if config is not None or path.is_file() else None


def _store(config: Path | None = None) -> KeyStore:
    """The spec's gateway.database when it names one, else keys.db under AIRLOCK_HOME."""
    from airlock.gateway.apikeys import KeyStore
    from airlock.settings import Settings

    spec_path = _spec_path(config)
    if spec_path is not None:
        from airlock.spec import load_spec

        database = load_spec(spec_path).gateway.database
        if database is not None:
            return KeyStore(database)
    return KeyStore(Settings.from_env().keys_db)


def _audit(config: Path | None, action: str, **fields: Any) -> None:
    """The admin action into the spec's audit log, in the gateway's chain (nothing without a spec or
    an ``audit_log``); a log that cannot be written is an error, never a silent pass."""
    from airlock.gateway.audit import AuditConfig, append_admin
    from airlock.spec import load_spec

    spec_path = _spec_path(config)
    audit = AuditConfig.of(load_spec(spec_path).gateway) if spec_path is not None else None
    if audit is None:
        return
    try:
        append_admin(audit, action, user=getpass.getuser(), **fields)
    except OSError as exc:
        raise KeyStoreError(
            f"the audit log {audit.path} cannot be written ({exc.strerror or exc}): {action} is not recorded",
            hint="fix the audit log's folder (space, permissions), then run the command again",
        ) from exc


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def parse_expiry(value: str | None, now: float | None = None) -> float | None:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, or a date (``2027-01-31``: its start, UTC) or an
    ISO date and time (UTC unless it names an offset)."""
    if value is None:
        return None
    now = time.time() if now is None else now
    text = value.strip()
    if match := re.fullmatch(r"(\d+)\s*([mhdw])", text):
        amount = int(match[1])
        if amount == 0:
            raise ConfigError(f"--expires {value!r} is now", hint="give a positive duration, e.g. 30d")
        return now + amount * _UNITS[match[2]]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--expires {value!r} is neither a duration nor a date",
            hint="e.g. 30d, 12h, 2w, 2027-01-31 or 2027-01-31T18:00",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    stamp = when.timestamp()
    if stamp <= now:
        raise ConfigError(f"--expires {value!r} is in the past")
    return stamp


def parse_scopes(value: str | None) -> list[str] | None:
    """``--scope chat,models`` as a list; None (no flag): the inference scopes."""
    if value is None:
        return None
    from airlock.gateway.apikeys import check_scopes

    names = [s.strip() for s in value.split(",") if s.strip()]
    try:
        return list(check_scopes(names))
    except KeyStoreError as exc:
        raise ConfigError(f"--scope {value!r}: {exc.message}", hint=exc.hint) from None


def parse_models(value: str | None) -> list[str] | None:
    """``--models a,b`` as a list; None (no flag) is every model; an empty list or name is an error."""
    if value is None:
        return None
    names = [m.strip() for m in value.split(",")]
    if not any(names):
        raise ConfigError(
            "--models is empty", hint="name at least one model, or leave --models out for every model"
        )
    if not all(names):
        raise ConfigError(f"--models {value!r} has an empty name", hint="separate names with single commas")
    return names


def check_against_spec(models: list[str], config: Path | None) -> None:
    """Refuse names the spec's gateway will not offer; without a spec, warn that they are unchecked."""
    from airlock.gateway.apikeys import check_models
    from airlock.spec import load_spec

    spec_path = config if config is not None else Path("airlock.yaml")
    if config is not None or spec_path.is_file():
        spec = load_spec(spec_path)
        check_models(models, [name for model in spec.models for name in model.names])
        return
    from airlock.serving.default_model import DEFAULT_MODEL_ALIASES, DEFAULT_MODEL_NAME

    default_names = (DEFAULT_MODEL_NAME, *DEFAULT_MODEL_ALIASES)
    unchecked = [m for m in models if m not in default_names]
    if unchecked:
        err.print(
            f"[yellow]warning:[/] no airlock.yaml here, so {escape(', '.join(unchecked))} cannot be checked "
            f"(give the spec with --config; without one, serve offers {escape(', '.join(default_names))})"
        )


def _limit(name: str) -> Any:
    return typer.Option(f"--{name}", min=1, help=_LIMIT_HELP[name])


_LIMIT_HELP = {
    "rpm": "Requests per minute.",
    "tpm": "Tokens (prompt + completion) per minute.",
    "tpd": "Tokens per UTC day.",
    "concurrency": "Requests in flight at once.",
}


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for, e.g. 'alice' or 'ci'.")],
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated models it may use (default: all).")
    ] = None,
    scope: Annotated[
        str | None,
        typer.Option(
            "--scope",
            help="Comma-separated routes it may use: chat, completions, embeddings, models, metrics, "
            "admin (default: chat,completions,embeddings,models; admin goes alone or with metrics).",
        ),
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="When it stops working: 30d, 12h, 2w, or a date (UTC).")
    ] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Who answers for it (a label).")] = None,
    team: Annotated[str | None, typer.Option("--team", help="The team it belongs to (a label).")] = None,
    rpm: Annotated[int | None, _limit("rpm")] = None,
    tpm: Annotated[int | None, _limit("tpm")] = None,
    tpd: Annotated[int | None, _limit("tpd")] = None,
    concurrency: Annotated[int | None, _limit("concurrency")] = None,
    config: ConfigOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the key (for scripts).")] = False,
) -> None:
    """Create a key. It is shown once; only its hash is stored. It works at once."""
    from airlock.gateway.apikeys import KeyLimits

    allowed = parse_models(models)
    if allowed is not None:
        check_against_spec(allowed, config)
    limits = KeyLimits(rpm=rpm, tpm=tpm, tpd=tpd, concurrency=concurrency)
    store = _store(config)
    key, token = store.create(
        name,
        allowed,
        scopes=parse_scopes(scope),
        owner=owner,
        team=team,
        expires_at=parse_expiry(expires),
        limits=limits,
    )
    try:
        _audit(config, "key_create", key=key.name, key_id=key.key_id, scopes=list(key.granted),
               models=key.models, expires_at=key.expires_at)  # fmt: skip
    except KeyStoreError as exc:
        store.revoke(key.name)  # an admin action the audit log cannot record does not stand
        raise KeyStoreError(f"{exc.message}, so the new key {key.name!r} was revoked", hint=exc.hint) from exc
    if quiet:
        typer.echo(token)
        return
    what = ", ".join(key.models) if key.models else "all models"
    extra = f"; {key.limits.describe()}" if key.limits.any else ""
    expiry = f"; expires {_when(key.expires_at)}" if key.expires_at else ""
    out.print(
        f"Created key [bold]{escape(key.name)}[/] ({escape(what)}; {escape(', '.join(key.granted))}"
        f"{escape(extra)}{expiry}). Store it now; it is not shown again:"
    )
    out.print(token, markup=False)


def _usage_row(key: ApiKey, usage: KeyUsage | None) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "name": key.name,
        "id": key.key_id,
        "owner": key.owner,
        "team": key.team,
        "models": list(key.models) if key.models is not None else None,
        "scopes": list(key.granted),
        "limits": {k: v for k, v in asdict(key.limits).items() if v is not None},
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "usage": asdict(usage) if usage is not None else None,
    }


def _counts(requests: int, prompt: int, completion: int) -> str:
    """``12 req, 340 in / 1,200 out`` (tokens)."""
    return f"{requests:,} req, {prompt:,} in / {completion:,} out"


@app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (usage included).")] = False,
    config: ConfigOption = None,
) -> None:
    """List keys: scopes, limits, usage today and in total (tokens in and out), last use; never the
    secrets. Usage lags by up to a second (each gateway writes it once a second)."""
    from rich.table import Table

    store = _store(config)
    rows = store.list(include_revoked=all_)
    usage = store.usage()
    if as_json:
        import json

        typer.echo(json.dumps([_usage_row(k, usage.get(k.key_id)) for k in rows], indent=2))
        return
    table = Table("name", "id", "owner/team", "may use", "limits", "today", "in total", "last used",
                  "expires", *(["revoked"] if all_ else []))  # fmt: skip
    for key in rows:
        u = usage.get(key.key_id)
        models = ", ".join(key.models) if key.models else "all models"
        cells = [
            escape(key.name),
            key.key_id,
            escape("/".join(x for x in (key.owner, key.team) if x) or "-"),
            escape(f"{models}; {','.join(key.granted)}"),
            escape(key.limits.describe()),
            _counts(u.requests_today, u.prompt_today, u.completion_today) if u else "-",
            _counts(u.requests_total, u.prompt_total, u.completion_total) if u else "-",
            _when(u.last_used_at if u else None),
            _when(key.expires_at),
        ]
        if all_:
            cells.append(_when(key.revoked_at))
        table.add_row(*cells)
    out.print(table)


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")], config: ConfigOption = None) -> None:
    """Revoke a key; every running gateway refuses it from its next request."""
    key = _store(config).revoke(name)
    out.print(f"Revoked key [bold]{escape(key.name)}[/] ({key.key_id}).")
    _audit(config, "key_revoke", key=key.name, key_id=key.key_id)
