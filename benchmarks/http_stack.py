"""Which HTTP stack for the gateway: the same JSON pass-through (parse, re-serialise, forward) on each.

Variants: raw ASGI on uvicorn (httptools, uvloop) with an aiohttp client (what airlock uses);
aiohttp.web server and client; Starlette on uvicorn with an aiohttp client; Starlette with httpx.
Load: wrk at 1 and 32 connections against benchmarks/mock_openai.py. Variants whose libraries are not
installed are skipped (`pip install starlette httpx` for all four).

    python benchmarks/http_stack.py [--duration 6]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from _procs import Proc, free_port
from gateway_overhead import run_wrk

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "asgi+uvicorn+aiohttp": ("uvicorn", "aiohttp"),
    "aiohttp.web": ("aiohttp",),
    "starlette+aiohttp": ("starlette", "aiohttp", "uvicorn"),
    "starlette+httpx": ("starlette", "httpx", "uvicorn"),
}


def serve_asgi(port: int, upstream: str) -> None:
    import aiohttp
    import orjson
    import uvicorn

    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await state["s"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        data = orjson.dumps(orjson.loads(body)) if body else b""
        async with state["s"].request(
            scope["method"], upstream + scope["path"], data=data, headers={"Content-Type": "application/json"}
        ) as r:
            out = await r.read()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": r.status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def serve_aiohttp(port: int, upstream: str) -> None:
    import aiohttp
    import orjson
    import uvloop
    from aiohttp import web

    async def ctx(app: web.Application) -> Any:
        app["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["s"].close()

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        data = orjson.dumps(orjson.loads(body)) if body else b""
        async with request.app["s"].request(
            request.method, upstream + request.path, data=data, headers={"Content-Type": "application/json"}
        ) as r:
            return web.Response(body=await r.read(), status=r.status, content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(ctx)
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop())


def serve_starlette(port: int, upstream: str, client: str) -> None:
    from contextlib import asynccontextmanager

    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    @asynccontextmanager
    async def life(app: Starlette) -> Any:
        if client == "httpx":
            import httpx

            app.state.c = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100)
            )
            yield
            await app.state.c.aclose()
        else:
            import aiohttp

            app.state.c = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            yield
            await app.state.c.close()

    async def handler(request: Request) -> Response:
        body = await request.body()
        data = orjson.dumps(orjson.loads(body)) if body else b""
        url = upstream + request.url.path
        if client == "httpx":
            r = await request.app.state.c.request(
                request.method, url, content=data, headers={"Content-Type": "application/json"}
            )
            return Response(r.content, status_code=r.status_code, media_type="application/json")
        async with request.app.state.c.request(
            request.method, url, data=data, headers={"Content-Type": "application/json"}
        ) as r:
            return Response(await r.read(), status_code=r.status, media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", handler, methods=["GET", "POST"])], lifespan=life)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def serve(variant: str, port: int, upstream: str) -> None:
    if variant == "asgi+uvicorn+aiohttp":
        serve_asgi(port, upstream)
    elif variant == "aiohttp.web":
        serve_aiohttp(port, upstream)
    else:
        serve_starlette(port, upstream, variant.split("+")[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--serve", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.upstream)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mport = free_port()
        mock = Proc(
            "mock", [sys.executable, str(ROOT / "benchmarks/mock_openai.py"), "--port", str(mport)], work
        )
        upstream = f"http://127.0.0.1:{mport}"
        try:
            mock.wait_http(upstream + "/health")
            for variant, needs in VARIANTS.items():
                if any(importlib.util.find_spec(n) is None for n in needs):
                    print(f"skipped {variant}: needs {', '.join(needs)}", file=sys.stderr)
                    continue
                port = free_port()
                proc = Proc(
                    "variant",
                    [
                        sys.executable,
                        __file__,
                        "--serve",
                        variant,
                        "--port",
                        str(port),
                        "--upstream",
                        upstream,
                    ],
                    work,
                )
                try:
                    proc.wait_http(f"http://127.0.0.1:{port}/health")
                    for c in (1, 32):
                        run_wrk(
                            f"http://127.0.0.1:{port}",
                            stream=False,
                            concurrency=c,
                            duration=1,
                            token=None,
                            workdir=work,
                        )
                        r = run_wrk(
                            f"http://127.0.0.1:{port}",
                            stream=False,
                            concurrency=c,
                            duration=args.duration,
                            token=None,
                            workdir=work,
                        )
                        rows.append(
                            {
                                "variant": variant,
                                "clients": c,
                                "rps": r["requests"] / (r["duration_us"] / 1e6),
                                "p50_ms": r["p50_us"] / 1000,
                            }
                        )
                finally:
                    proc.stop()
        finally:
            mock.stop()
    print(f"{'variant':<24}{'clients':>8}{'req/s':>10}{'p50 ms':>9}")
    for row in rows:
        print(f"{row['variant']:<24}{row['clients']:>8}{row['rps']:>10.0f}{row['p50_ms']:>9.3f}")
    out = ROOT / "benchmarks/results/http_stack.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
