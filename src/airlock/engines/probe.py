"""Readiness and liveness probes: an engine is ready when its health route and its model list answer."""

from __future__ import annotations

import aiohttp

from airlock.engines.base import EngineConfig


def auth_headers(config: EngineConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}


async def check_health(
    session: aiohttp.ClientSession, config: EngineConfig, timeout: float = 5.0
) -> str | None:
    """None when the engine is alive, else the reason it is not."""
    url = config.base_url + config.health_path if config.health_path else config.models_url
    try:
        async with session.get(
            url, headers=auth_headers(config), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            if r.status != 200:
                return f"GET {url} answered {r.status}"
            await r.read()
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
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        return f"GET {config.models_url} failed: {type(exc).__name__}: {exc}".rstrip(": ")
    offered = (
        [m.get("id") for m in body.get("data", []) if isinstance(m, dict)] if isinstance(body, dict) else []
    )
    if config.upstream_model not in offered:
        return f"model {config.upstream_model!r} is not offered there (it offers {offered})"
    return None
