"""One streamed request, timed: when it was sent, when its first and last tokens came, what usage said.

Requests go out with ``stream: true`` and ``stream_options: {"include_usage": true}``, so the token
counts come from the server's final usage chunk rather than from counting chunks (a chunk may
carry several tokens, or none). The clock is :func:`time.perf_counter` (a Sender takes another,
so tests can run on virtual time), read as each line of the event stream arrives.

* TTFT: from sending to the first chunk that carries text (``delta.content``, ``reasoning_content``
  or, on completions, ``text``); a role-only or empty first chunk does not count.
* Chunk times: the arrival of every chunk that carries text, for the inter-token latency
  ((last - first) / (output tokens - 1), as NVIDIA genai-perf defines it) and the gaps between chunks.

A failure is classified by kind (``http 503``, ``timeout``, ``connect``, ``disconnect``,
``stream error``, ``incomplete``) and never raised: under load, errors are data.

    sender = Sender(session, "http://127.0.0.1:8000/v1", model="m", endpoint="chat")
    record = await sender.send(Prompt(max_tokens=16, messages=({"role": "user", "content": "hi"},)))
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from airlock.bench.workload import Prompt

_DETAIL_CHARS = 300


@dataclass(frozen=True)
class RequestRecord:
    """What one request did; times are seconds, ``start`` from the level's start, the rest from ``start``.

    ``chunk_times`` are the arrivals of text-carrying chunks, from ``start``. ``output_tokens`` and
    ``prompt_tokens`` are the server's usage, None when it sent none.
    """

    start: float
    e2e: float | None = None
    ttft: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    chunk_times: tuple[float, ...] = field(default=(), repr=False)
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def itl(self) -> float | None:
        """Mean inter-token latency: the decode time spread over the tokens after the first."""
        if not self.ok or self.output_tokens is None or self.output_tokens < 2 or len(self.chunk_times) < 2:
            return None
        return (self.chunk_times[-1] - self.chunk_times[0]) / (self.output_tokens - 1)

    @property
    def gaps(self) -> tuple[float, ...]:
        """Times between successive text chunks: stalls show here even when the mean ITL looks fine."""
        times = self.chunk_times
        return tuple(b - a for a, b in itertools.pairwise(times))


class _StaleConnection(Exception):
    """The connection failed before any response: worth one more try on a fresh connection."""

    def __init__(self, record: RequestRecord) -> None:
        super().__init__(record.detail)
        self.record = record


@dataclass
class _Stream:
    sent: float
    chunk_times: list[float] = field(default_factory=list)
    first_choice: float | None = None
    usage: Mapping[str, Any] | None = None
    finished: bool = False
    error: str | None = None


def _has_text(choice: Mapping[str, Any]) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, Mapping):
        return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"))
    return bool(choice.get("text"))


def _take_event(state: _Stream, payload: bytes, now: float) -> None:
    if payload == b"[DONE]":
        state.finished = True
        return
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        state.error = f"not JSON: {payload[:80]!r}"
        return
    if not isinstance(data, dict):
        return
    if data.get("error"):
        state.error = str(data["error"])[:_DETAIL_CHARS]
        return
    usage = data.get("usage")
    if isinstance(usage, Mapping):
        state.usage = usage
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        if state.first_choice is None:
            state.first_choice = now
        if _has_text(choices[0]):
            state.chunk_times.append(now)
        if choices[0].get("finish_reason"):
            state.finished = True


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Sender:
    """Sends prompts to one endpoint over a shared :class:`aiohttp.ClientSession`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        model: str,
        endpoint: str,
        api_key: str | None = None,
        ignore_eos: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        timeout_s: float = 300.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.session = session
        self.clock = clock
        self.url = f"{base_url}/chat/completions" if endpoint == "chat" else f"{base_url}/completions"
        self.model = model
        self.endpoint = endpoint
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.ignore_eos = ignore_eos
        self.extra_body = dict(extra_body or {})
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._fresh: aiohttp.ClientSession | None = None

    def body(self, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {**self.extra_body, "model": self.model, "max_tokens": prompt.max_tokens}
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.endpoint == "chat":
            body["messages"] = list(prompt.messages or ({"role": "user", "content": prompt.text or ""},))
        else:
            body["prompt"] = prompt.text or ""
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        return body

    async def send(self, prompt: Prompt, origin: float = 0.0) -> RequestRecord:
        """Send one prompt and time it; ``origin`` is the level's start on this sender's clock.

        Connections are kept alive, unless the server turns out not to keep them: llama-server
        closes the connection after every stream without saying ``Connection: close``, so the next
        request on it fails while being written (httpx checks a pooled connection before reusing
        it; aiohttp does not, and never retries a POST). The first such failure switches this
        sender to a fresh connection per request, and the request is sent again with its clock
        restarted; it never reached the server.
        """
        data = orjson.dumps(self.body(prompt))
        try:
            return await self._attempt(data, origin)
        except _StaleConnection:
            self._switch_to_fresh_connections()
        try:
            return await self._attempt(data, origin)
        except _StaleConnection as stale:
            return stale.record

    @property
    def keeps_alive(self) -> bool:
        """False once the server was found to close kept-alive connections."""
        return self._fresh is None

    def _switch_to_fresh_connections(self) -> None:
        if self._fresh is None:
            self._fresh = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True), read_bufsize=1 << 20
            )

    async def aclose(self) -> None:
        """Close the fresh-connection session, if one was made (the shared session is the caller's)."""
        if self._fresh is not None:
            await self._fresh.close()

    async def _attempt(self, data: bytes, origin: float) -> RequestRecord:
        sent = self.clock()
        start = sent - origin
        state = _Stream(sent=sent)
        answered = False

        def failed(kind: str, detail: str) -> RequestRecord:
            return RequestRecord(
                start=start, e2e=self.clock() - sent, error=kind, detail=detail[:_DETAIL_CHARS]
            )

        try:
            session = self._fresh or self.session
            async with session.post(self.url, data=data, headers=self.headers, timeout=self.timeout) as resp:
                answered = True
                if resp.status != 200:
                    return failed(f"http {resp.status}", await resp.text(errors="replace"))
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        _take_event(state, line[5:].strip(), self.clock())
                        if state.error is not None:
                            break
        except TimeoutError:
            return failed("timeout", f"no complete answer in {self.timeout.total:g} s")
        except aiohttp.ClientConnectorError as exc:
            return failed("connect", str(exc))
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            record = failed("disconnect", str(exc) or type(exc).__name__)
            if not answered:
                raise _StaleConnection(record) from exc
            return record
        except (aiohttp.ClientPayloadError, ConnectionResetError) as exc:
            return failed("disconnect", str(exc) or type(exc).__name__)
        except aiohttp.ClientError as exc:
            return failed("client", f"{type(exc).__name__}: {exc}")
        return self._record(state, start)

    def _record(self, state: _Stream, start: float) -> RequestRecord:
        end = self.clock()
        sent = state.sent
        times = tuple(t - sent for t in state.chunk_times)
        first = times[0] if times else (state.first_choice - sent if state.first_choice is not None else None)
        if state.error is not None:
            return RequestRecord(start=start, e2e=end - sent, error="stream error", detail=state.error)
        if not state.finished:
            return RequestRecord(
                start=start, e2e=end - sent, ttft=first, error="incomplete",
                detail="the stream ended without a finish_reason or [DONE]",
            )  # fmt: skip
        usage = state.usage or {}
        return RequestRecord(
            start=start,
            e2e=end - sent,
            ttft=first,
            prompt_tokens=_int(usage.get("prompt_tokens")),
            output_tokens=_int(usage.get("completion_tokens")),
            chunk_times=times,
        )
