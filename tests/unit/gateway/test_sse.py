from __future__ import annotations

import json

from airlock.gateway.sse import UsageScanner, split_complete


def event(data: object) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


CHUNK = event({"choices": [{"delta": {"content": "hi"}}]})
FINAL = event({"choices": [{"delta": {}, "finish_reason": "stop"}]})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
DONE = b"data: [DONE]\n\n"


def test_split_complete_keeps_partial_tail() -> None:
    assert split_complete(b"data: a\n\ndata: b") == (b"data: a\n\n", b"data: b")
    assert split_complete(b"data: a\r\n\r\ndata: b") == (b"data: a\r\n\r\n", b"data: b")
    assert split_complete(b"data: partial") == (b"", b"data: partial")


def test_forwards_events_unchanged_and_reads_usage() -> None:
    scanner = UsageScanner()
    stream = CHUNK + FINAL + USAGE + DONE
    out = b"".join(scanner.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) + scanner.flush()
    assert out == stream
    assert scanner.usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_drops_only_the_usage_only_event_it_added() -> None:
    scanner = UsageScanner(drop_usage_only=True)
    out = scanner.feed(CHUNK + FINAL) + scanner.feed(USAGE + DONE) + scanner.flush()
    assert out == CHUNK + FINAL + DONE
    assert scanner.usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_usage_inside_a_content_chunk_is_kept() -> None:
    both = event({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": {"completion_tokens": 9}})
    scanner = UsageScanner(drop_usage_only=True)
    assert scanner.feed(both) == both
    assert scanner.usage == {"completion_tokens": 9}


def test_a_content_mentioning_usage_is_not_mistaken() -> None:
    text = event({"choices": [{"delta": {"content": 'the "usage" field'}}]})
    scanner = UsageScanner(drop_usage_only=True)
    assert scanner.feed(text) == text
    assert scanner.usage is None


def test_nothing_is_held_back_but_a_partial_event() -> None:
    scanner = UsageScanner()
    assert scanner.feed(CHUNK[:10]) == b""
    assert scanner.feed(CHUNK[10:]) == CHUNK


def test_the_usage_only_event_is_cut_out_of_one_block_in_crlf_too() -> None:
    crlf = [e.replace(b"\n", b"\r\n") for e in (CHUNK, FINAL, USAGE, DONE)]
    for events in ([CHUNK, FINAL, USAGE, DONE], crlf):
        scanner = UsageScanner(drop_usage_only=True)
        assert scanner.feed(b"".join(events)) + scanner.flush() == events[0] + events[1] + events[3]
        assert scanner.usage == {"prompt_tokens": 3, "completion_tokens": 2}
    # data split over two lines is one event's data (the SSE rule), parsed whole
    split = b'data: {"choices": [],\ndata:  "usage": {"prompt_tokens": 1}}\n\n'
    scanner = UsageScanner(drop_usage_only=True)
    assert scanner.feed(CHUNK + split + DONE) == CHUNK + DONE
    assert scanner.usage == {"prompt_tokens": 1}
