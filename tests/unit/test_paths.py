"""The router's path table, reading a request's model (JSON or multipart), the Anthropic
error shapes and the guard's path rules: pure functions."""

from __future__ import annotations

import json

import pytest

from corral.api import anthropic
from corral.api.paths import MULTIPART_PATHS, ROUTES, form_fields, request_fields
from corral.api.security import dialect_of, is_inference
from corral.errors import CorralError
from corral.router import input_tokens_from, usage_from
from tests.fakes import fake_llama_server as fake

CT = [(b"content-type", b"multipart/form-data; boundary=XyZ")]


def form(*parts: bytes) -> bytes:
    return b"".join(b"--XyZ\r\n" + p + b"\r\n" for p in parts) + b"--XyZ--\r\n"


def test_the_table_holds_llama_servers_paths_and_what_the_relay_needs():
    assert ROUTES["/v1/chat/completions"].label == "chat/completions"  # the metric label kept
    assert ROUTES["/completion"].label == "completion" and ROUTES["/infill"].upstream == "/infill"
    assert ROUTES["/v1/messages"].dialect == "anthropic"
    assert ROUTES["/v1/messages/count_tokens"].dialect == "anthropic"
    assert {p for p, r in ROUTES.items() if not r.counted} == {
        "/v1/chat/completions/input_tokens",
        "/chat/completions/input_tokens",
        "/v1/responses/input_tokens",
        "/responses/input_tokens",
        "/v1/messages/count_tokens",
        "/tokenize",
        "/detokenize",
        "/apply-template",
    }
    assert MULTIPART_PATHS == {"/v1/audio/transcriptions", "/audio/transcriptions"}
    # the fake copies server.cpp's routes: it serves every path of the table
    served = set(fake.POSTS) | {"/v1/chat/completions", "/chat/completions", "/v1/completions"}
    assert set(ROUTES) <= served, set(ROUTES) - served


def test_request_fields_of_json_bodies():
    route = ROUTES["/v1/messages"]
    ok = b'"messages": []'
    assert request_fields(route, b'{"model": "m", "stream": true, ' + ok + b"}", []) == ("m", True)
    assert request_fields(route, b'{"stream": "yes", ' + ok + b"}", []) == (None, False)
    assert request_fields(ROUTES["/tokenize"], b'{"model": ""}', []) == (None, False)
    for body, msg in [
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"model": 3}', "must be a string"),
        (b'{"model": ["a"]}', "not list"),
        (b'{"model": "m", "messages": {}}', '"messages" is required'),
    ]:
        with pytest.raises(CorralError) as err:
            request_fields(route, body, [])
        assert err.value.status == 400 and msg in err.value.message


def test_the_model_of_a_multipart_form_and_files_skipped():
    route = ROUTES["/v1/audio/transcriptions"]
    body = form(
        b'Content-Disposition: form-data; name="file"; filename="model.wav"\r\n'
        b'Content-Type: audio/wav\r\n\r\nRIFF name="model" --XyZ-x\r\n\r\nmore',
        b'Content-Disposition: form-data; name="model"\r\n\r\ngemma',
        b'Content-Disposition: form-data; name="stream"\r\n\r\ntrue',
    )
    assert request_fields(route, body, CT) == ("gemma", True)
    assert request_fields(
        route, form(b'Content-Disposition: form-data; name="x"\r\n\r\n1'), CT
    ) == (
        None,
        False,
    )
    assert form_fields(b"", "multipart/form-data; boundary=XyZ", ("model",)) == {}
    for ctype, msg in [
        (b"application/json", "takes multipart/form-data"),
        (b"multipart/form-data", "without a boundary"),
    ]:
        with pytest.raises(CorralError) as err:
            request_fields(route, body, [(b"content-type", ctype)])
        assert err.value.status == 400 and msg in err.value.message


def test_anthropic_error_shapes():
    assert anthropic.error_body(404, "no such model") == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
    }
    types = {s: anthropic.error_type(s) for s in (400, 401, 403, 409, 429, 502, 503)}
    assert types == {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        409: "invalid_request_error",
        429: "rate_limit_error",
        502: "api_error",
        503: "overloaded_error",
    }
    event = anthropic.sse_error(502, "lost")
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    assert json.loads(event.split(b"data: ", 1)[1])["error"]["type"] == "api_error"


def test_which_paths_an_inference_key_may_call_and_in_which_shape_it_is_refused():
    for method, path in [
        ("POST", "/v1/messages"),
        ("GET", "/v1/models"),
        ("POST", "/infill"),
        ("POST", "/tokenize"),
        ("POST", "/apply-template"),
        ("GET", "/api/tags"),
        ("HEAD", "/api/version"),
        ("POST", "/api/chat"),
        ("POST", "/api/embed"),
    ]:
        assert is_inference(method, path), (method, path)
    for method, path in [
        ("POST", "/api/pull"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/copy"),
        ("GET", "/api/v1/instances"),
        ("GET", "/metrics"),
        ("POST", "/api/tags"),
    ]:
        assert not is_inference(method, path), (method, path)
    assert dialect_of("/v1/messages") == dialect_of("/v1/messages/count_tokens") == "anthropic"
    assert dialect_of("/v1/chat/completions") == dialect_of("/tokenize") == "openai"
    assert dialect_of("/api/chat") == "ollama" and dialect_of("/api/v1/keys") == "corral"


def test_usage_from_anthropic_and_responses_answers():
    usage = {"cache_read_input_tokens": 0, "input_tokens": 7, "output_tokens": 5}
    body = json.dumps({"type": "message", "usage": usage}).encode()
    assert usage_from(body) == (7, 5, None)
    tail = b'event: message_delta\ndata: {"usage":{"output_tokens":9}}\n\n'
    assert usage_from(tail) == (0, 9, None)  # the input tokens are in the stream's head
    start = b'event: message_start\ndata: {"message":{"usage":{"input_tokens":12}}}\n\n'
    assert input_tokens_from(start + tail) == 12 and input_tokens_from(tail) == 0
