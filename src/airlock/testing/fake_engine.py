"""A fake engine: a real HTTP server that speaks enough of the OpenAI API to test the gateway against.

Deterministic: the reply to any prompt is ``reply`` cut to ``max_tokens`` words, streamed one word
per event every ``token_delay`` seconds, the first after ``ttft`` seconds (default 0); usage counts
words. Special prompts steer it:

    "please fail 400"    -> 400 with an OpenAI error body
    "please fail 500"    -> 500 with a plain-text body
    "please hang"        -> streams forever (until the client goes away)
    "please drip"        -> streams at most one token every 0.2 s (a slow stream; with "please hang" too)
    "please linger"      -> keeps a stream open for 30 s after its last event ([DONE])
    "please wait"        -> answers a plain request after 3 s
    "please crash"       -> the process exits at once (to test supervision)

It counts requests and cancelled requests (streamed or not) at ``GET /stats``, requires ``FAKE_ENGINE_API_KEY`` when
set, and exposes routes that the gateway must never pass on (``/tokenize``, ``/invocations``).

    python -m airlock.testing.fake_engine --port 8001 --model tiny --token-delay 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from aiohttp import web

DRIP_S = 0.2  # a "please drip" stream's pace: 16 tokens in 3.2 s
REPLY = "the quick brown fox jumps over the lazy dog and keeps on running far away"


def _event(data: object) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class FakeEngine:
    def __init__(
        self, model: str, token_delay: float, startup_delay: float, api_key: str | None, ttft: float = 0.0
    ) -> None:
        self.model = model
        self.token_delay = token_delay
        self.ttft = ttft
        self.ready_at = time.monotonic() + startup_delay
        self.api_key = api_key
        self.stats: dict[str, int] = {"requests": 0, "streams": 0, "cancelled": 0, "completed": 0}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/tokenize", self.secret_route)
        app.router.add_post("/invocations", self.secret_route)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        authorized = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        if self.api_key and request.path not in ("/health", "/stats") and not authorized:
            return web.json_response({"error": {"message": "bad engine key", "type": "auth"}}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def health(self, request: web.Request) -> web.Response:
        if time.monotonic() < self.ready_at:
            return web.json_response({"status": "loading"}, status=503)
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def secret_route(self, request: web.Request) -> web.Response:
        return web.json_response({"secret": True})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        return await self._generate(request, body, prompt, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return await self._generate(request, body, str(body.get("prompt", "")), chat=False)

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(str(x))), 0.5, -0.5]}
            for i, x in enumerate(inputs)
        ]
        tokens = sum(len(str(x).split()) for x in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response({"object": "list", "model": self.model, "data": data, "usage": usage})

    async def _generate(
        self, request: web.Request, body: dict[str, Any], prompt: str, chat: bool
    ) -> web.StreamResponse:
        self.stats["requests"] += 1
        if body.get("model") != self.model:
            msg = f"model {body.get('model')!r} not found"
            return web.json_response(
                {"error": {"message": msg, "type": "NotFoundError", "code": 404}}, status=404
            )
        if "please fail 400" in prompt:
            return web.json_response(
                {"error": {"message": "engine says no", "type": "BadRequestError", "code": 400}}, status=400
            )
        if "please fail 500" in prompt:
            return web.Response(text="engine exploded", status=500)
        if "please crash" in prompt:
            os._exit(17)
        words = REPLY.split()[: int(body.get("max_tokens") or 16)]
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(words),
            "total_tokens": len(prompt.split()) + len(words),
        }
        obj = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            try:
                await asyncio.sleep(3.0 if "please wait" in prompt else self.token_delay * len(words))
            except asyncio.CancelledError:
                self.stats["cancelled"] += 1
                raise
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            if chat:
                choice["message"] = {"role": "assistant", "content": " ".join(words)}
            else:
                choice["text"] = " ".join(words)
            self.stats["completed"] += 1
            return web.json_response(
                {
                    "id": "fake-1",
                    "object": obj,
                    "created": 0,
                    "model": self.model,
                    "choices": [choice],
                    "usage": usage,
                }
            )
        return await self._stream(
            request, body, words, usage, chat, hang="please hang" in prompt, linger="please linger" in prompt,
            delay=max(self.token_delay, DRIP_S) if "please drip" in prompt else self.token_delay,
        )  # fmt: skip

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        words: list[str],
        usage: dict[str, int],
        chat: bool,
        hang: bool,
        linger: bool = False,
        delay: float = 0.0,
    ) -> web.StreamResponse:
        self.stats["streams"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        try:
            if self.ttft:
                await asyncio.sleep(self.ttft)
            i = 0
            while hang or i < len(words):
                word = words[i % len(words)] if words else "x"
                piece = (
                    {"delta": {"content": (" " if i else "") + word}}
                    if chat
                    else {"text": (" " if i else "") + word}
                )
                chunk = {
                    "id": "fake-1",
                    "object": obj,
                    "model": self.model,
                    "choices": [{"index": 0, **piece, "finish_reason": None}],
                }
                await resp.write(_event(chunk))
                await asyncio.sleep(delay)
                i += 1
            final = {
                "id": "fake-1",
                "object": obj,
                "model": self.model,
                "choices": [
                    {"index": 0, "delta" if chat else "text": {} if chat else "", "finish_reason": "length"}
                ],
            }
            await resp.write(_event(final))
            if (body.get("stream_options") or {}).get("include_usage"):
                tail = {"id": "fake-1", "object": obj, "model": self.model, "choices": [], "usage": usage}
                await resp.write(_event(tail))
            await resp.write(b"data: [DONE]\n\n")
            self.stats["completed"] += 1
            if linger:  # an engine slow to close the stream after its last event
                await asyncio.sleep(30.0)
        except (asyncio.CancelledError, ConnectionResetError):
            self.stats["cancelled"] += 1
            raise
        return resp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fake")
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before a stream's first token")
    args = parser.parse_args(argv)
    engine = FakeEngine(
        args.model, args.token_delay, args.startup_delay, os.environ.get("FAKE_ENGINE_API_KEY"), args.ttft
    )
    web.run_app(
        engine.app(), host=args.host, port=args.port, print=None, access_log=None, handler_cancellation=True
    )


if __name__ == "__main__":
    main()
