"""A fast mock OpenAI backend for gateway benchmarks: raw asyncio on uvloop, canned answers, keep-alive.

Fast on purpose (no framework), so that what a benchmark measures is the proxy in front of it.

    python benchmarks/mock_openai.py --port 9100

POST /v1/chat/completions answers a fixed completion, or with ``"stream": true`` eight SSE events
(plus a usage event when ``include_usage`` is asked) in one chunked write; GET /v1/models and
GET /health answer for readiness checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvloop

MODEL = "mock"
COMPLETION = json.dumps(
    {
        "id": "cmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris is the capital of France."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
    }
).encode()
MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "mock"}]}
).encode()
HEALTH = b'{"status":"ok"}'


def _event(data: object) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


_WORDS = ["Paris", " is", " the", " capital", " of", " France", ".", ""]
_EVENTS = [
    _event(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None if w else "stop"}],
        }
    )
    for w in _WORDS
]
_USAGE = _event(
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
)
_DONE = b"data: [DONE]\n\n"
_SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
STREAM = _SSE_HEAD + _chunked(b"".join(_EVENTS) + _DONE)
STREAM_USAGE = _SSE_HEAD + _chunked(b"".join(_EVENTS) + _USAGE + _DONE)


def _json(body: bytes, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


R_COMPLETION, R_MODELS, R_HEALTH = _json(COMPLETION), _json(MODELS), _json(HEALTH)
R_404 = _json(b'{"error":{"message":"not found"}}', b"404 Not Found")


class MockProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.transport.write(self.answer(head.split(b" ", 2), body))

    @staticmethod
    def answer(request_line: list[bytes], body: bytes) -> bytes:
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else b"/"
        if method == b"POST" and path.endswith(b"/chat/completions"):
            if b'"stream":true' in body or b'"stream": true' in body:
                return STREAM_USAGE if b"include_usage" in body else STREAM
            return R_COMPLETION
        if path.endswith(b"/models"):
            return R_MODELS
        if path == b"/health":
            return R_HEALTH
        return R_404


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(MockProtocol, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fast mock OpenAI backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
