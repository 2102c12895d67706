"""Pure parts of the router: request parsing and reading usage from responses."""

from __future__ import annotations

import json

import pytest

from corral.errors import CorralError
from corral.router import parse_request, usage_from


def test_parse_request_finds_model_and_stream():
    assert parse_request(b'{"model": "m", "stream": true}') == ("m", True)
    assert parse_request(b'{"model": "m", "stream": "yes"}') == ("m", False)


@pytest.mark.parametrize("body, msg", [
    (b"{nope", "not valid JSON"),
    (b"[1]", "JSON object"),
    (b'{"model": ""}', "needs a \"model\""),
    (b'{"model": 3}', "needs a \"model\""),
])
def test_parse_request_rejects_bad_bodies(body, msg):
    with pytest.raises(CorralError) as err:
        parse_request(body)
    assert err.value.status == 400 and msg in err.value.message


def sse(*objs) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs) + b"data: [DONE]\n\n"


def test_usage_from_a_llama_server_stream_uses_timings():
    data = sse({"choices": [{"delta": {"content": "a"}}]},
               {"choices": [{"finish_reason": "stop"}],
                "timings": {"prompt_n": 11, "predicted_n": 5, "predicted_per_second": 42.5}})
    assert usage_from(data) == (11, 5, 42.5)


def test_usage_from_a_stream_with_include_usage_prefers_usage_counts():
    data = sse({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
               {"choices": [], "timings": {"prompt_n": 2, "predicted_n": 4,
                                           "predicted_per_second": 10.0}})
    assert usage_from(data) == (9, 4, 10.0)


def test_usage_from_a_json_body():
    body = json.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 8}}).encode()
    assert usage_from(body) == (3, 8, None)


def test_usage_is_read_from_a_window_not_the_whole_body():
    body = json.dumps({"data": [{"embedding": [0.5] * 200_000}],
                       "usage": {"prompt_tokens": 4, "completion_tokens": 0}}).encode()
    assert len(body) > 500_000
    assert usage_from(body) == (4, 0, None)
    inner = json.dumps({"choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 99}'}}],
                        "usage": {"prompt_tokens": 2, "completion_tokens": 3}}).encode()
    assert usage_from(inner) == (2, 3, None)  # text that looks like usage is escaped JSON


def test_usage_from_says_nothing_when_the_response_does_not():
    assert usage_from(sse({"choices": []})) is None
    assert usage_from(b"not json") is None
    assert usage_from(b'{"usage": "odd"}') is None
    # a truncated tail (the start of the stream was dropped) still parses whole lines
    tail = sse({"timings": {"prompt_n": 1, "predicted_n": 2, "predicted_per_second": 3.0}})
    assert usage_from(b'tial": 1}\n\n' + tail) == (1, 2, 3.0)
