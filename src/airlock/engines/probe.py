"""Readiness and liveness probes: an engine is ready when its health route and its model list answer."""

from __future__ import annotations

import errno
import os

import aiohttp

from airlock.engines.base import EngineConfig


class Unreachable(str):
    """A reason that is a failed connection (refused, no route, unknown host), not a slow answer.

    Known at once: nothing listens there now, so there is nothing to wait for.
    """


def _unreachable(url: str, exc: aiohttp.ClientConnectorError) -> Unreachable:
    code = exc.os_error.errno
    if code == errno.ECONNREFUSED:
        why = "connection refused (nothing listens there)"
    elif isinstance(code, int) and code > 0:
        why = os.strerror(code).lower()
    else:  # a resolver error (gaierror) or none: its own words
        why = str(exc.os_error.strerror or exc).lower()
    return Unreachable(f"cannot connect to {url}: {why}")


def auth_headers(config: EngineConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}


async def check_health(
    session: aiohttp.ClientSession, config: EngineConfig, timeout: float = 5.0
) -> str | None:
    """None when the engine is alive, else the reason it is not (an :class:`Unreachable` if no connection)."""
    url = config.base_url + config.health_path if config.health_path else config.models_url
    try:
        async with session.get(
            url, headers=auth_headers(config), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            if r.status != 200:
                return f"GET {url} answered {r.status}"
            await r.read()
    except aiohttp.ClientConnectorError as exc:
        return _unreachable(url, exc)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return f"GET {url} failed: {type(exc).__name__}: {exc}".rstrip(": ")
    return None


async def check_ready(
    session: aiohttp.ClientSession, config: EngineConfig, timeout: float = 5.0
) -> str | None:
    """None when health answers and the model list offers ``config.upstream_model``, else why not."""
    if config.health_path and (reason := await check_health(session, config, timeout)):
        return reason
    try:
        async with session.get(
            config.models_url, headers=auth_headers(config), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            if r.status != 200:
                return f"GET {config.models_url} answered {r.status}"
            body = await r.json(content_type=None)
    except aiohttp.ClientConnectorError as exc:
        return _unreachable(config.models_url, exc)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        return f"GET {config.models_url} failed: {type(exc).__name__}: {exc}".rstrip(": ")
    offered = (
        [m.get("id") for m in body.get("data", []) if isinstance(m, dict)] if isinstance(body, dict) else []
    )
    if config.upstream_model not in offered:
        return f"model {config.upstream_model!r} is not offered there (it offers {offered})"
    return None
