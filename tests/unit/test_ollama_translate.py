"""The Ollama <-> OpenAI translation (corral.ollama): pure functions, no daemon."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, strategies as st

from corral import ollama
from corral.errors import UsageError
from tests.property.conftest import any_json, profile

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(32)).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(32)).decode()


# -- options ------------------------------------------------------------------------------


def test_options_map_to_openai_fields():
    out = ollama.map_options(
        {
            "num_predict": 12,
            "temperature": 0.2,
            "top_k": 40,
            "top_p": 0.9,
            "min_p": 0.05,
            "seed": 7,
            "stop": ["\n\n", "END"],
            "repeat_penalty": 1.1,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "num_ctx": 4096,  # a load option: read elsewhere, not sent
            "num_gpu": 99,
            "something_new": 1,  # unknown: ignored, as Ollama does
        }
    )
    assert out == {
        "max_tokens": 12,
        "temperature": 0.2,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.05,
        "seed": 7,
        "stop": ["\n\n", "END"],
        "repeat_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }


def test_num_predict_without_limit_is_left_out_and_one_stop_string_is_a_list():
    assert ollama.map_options({"num_predict": -1, "stop": "x"}) == {"stop": ["x"]}


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": "hot"},
        {"top_k": 1.5},
        {"seed": True},
        {"num_predict": "10"},
        {"stop": [1, 2]},
        {"num_ctx": "big"},
        {"use_mmap": "yes"},
        "not an object",
    ],
)
def test_wrong_option_types_are_usage_errors(options):
    with pytest.raises(UsageError):
        ollama.map_options(options)


def test_num_ctx_is_checked_against_the_model_and_the_cap():
    assert ollama.num_ctx_of({"options": {"num_ctx": 2048}}) == 2048
    assert ollama.num_ctx_of({"options": {}}) is None
    with pytest.raises(UsageError):
        ollama.num_ctx_of({"options": {"num_ctx": 0}})
    ollama.check_num_ctx(2048, 8192)
    with pytest.raises(UsageError, match="context length 8192"):
        ollama.check_num_ctx(16384, 8192)
    with pytest.raises(UsageError, match="larger than corral allows"):
        ollama.check_num_ctx(ollama.MAX_NUM_CTX + 1, None)


# -- formats, images, think -----------------------------------------------------------


def test_format_json_and_schema():
    assert ollama.response_format("json") == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert ollama.response_format(schema) == {
        "type": "json_schema",
        "json_schema": {"name": "format", "schema": schema},
    }
    assert ollama.response_format(None) is None
    with pytest.raises(UsageError):
        ollama.response_format("yaml")


def test_images_become_data_url_parts_with_their_type():
    messages, has_images = ollama.chat_messages(
        [{"role": "user", "content": "what is this?", "images": [PNG, JPEG]}]
    )
    assert has_images
    parts = messages[0]["content"]
    assert parts[0] == {"type": "text", "text": "what is this?"}
    assert parts[1]["image_url"]["url"] == f"data:image/png;base64,{PNG}"
    assert parts[2]["image_url"]["url"] == f"data:image/jpeg;base64,{JPEG}"
    with pytest.raises(UsageError, match="base64"):
        ollama.chat_messages([{"role": "user", "content": "x", "images": ["not base64!"]}])


def test_think_asks_llama_server_for_reasoning_apart():
    body, _ = ollama.chat_request(
        {"messages": [{"role": "user", "content": "hi"}], "think": True, "stream": False}, "m"
    )
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["reasoning_format"] == "deepseek"
    off, _ = ollama.chat_request({"messages": [], "think": False}, "m")
    assert off["chat_template_kwargs"] == {"enable_thinking": False}
    high, _ = ollama.chat_request({"messages": [], "think": "high"}, "m")
    assert high["reasoning_effort"] == "high"
    with pytest.raises(UsageError):
        ollama.chat_request({"messages": [], "think": "very"}, "m")


def test_chat_request_streams_by_default_and_asks_for_usage():
    body, has_images = ollama.chat_request(
        {"model": "x", "messages": [{"role": "user", "content": "hi"}], "options": {"seed": 1}},
        "routed-name",
    )
    assert not has_images
    assert body == {
        "model": "routed-name",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_generate_is_a_chat_turn_unless_raw():
    endpoint, body, _ = ollama.generate_request(
        {"prompt": "Why?", "system": "Be brief.", "stream": False, "format": "json"}, "m"
    )
    assert endpoint == "chat/completions"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why?"},
    ]
    assert body["response_format"] == {"type": "json_object"}
    endpoint, body, _ = ollama.generate_request({"prompt": "<s>x", "raw": True}, "m")
    assert endpoint == "completions" and body["prompt"] == "<s>x" and body["stream"] is True
    with pytest.raises(UsageError):
        ollama.generate_request({"prompt": 3}, "m")


# -- tools, both ways --------------------------------------------------------------------


def test_tool_calls_out_have_string_arguments_and_tool_results_find_their_call():
    messages, _ = ollama.chat_messages(
        [
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": "22 C", "tool_name": "get_weather"},
        ]
    )
    call = messages[1]["tool_calls"][0]
    assert call["type"] == "function"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert messages[2]["tool_call_id"] == call["id"]


def test_tool_calls_in_have_object_arguments():
    answer = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
            }
        ]
    }
    out = ollama.chat_answer(answer, "m", 0.5)
    assert out["message"]["tool_calls"] == [
        {"function": {"index": 0, "name": "f", "arguments": {"a": 1}}}
    ]
    assert out["done_reason"] == "stop" and out["message"]["content"] == ""


# -- answers -----------------------------------------------------------------------------


def test_usage_and_timings_become_nanosecond_durations():
    answer = {
        "usage": {"prompt_tokens": 11, "completion_tokens": 5},
        "timings": {"prompt_ms": 20.0, "predicted_ms": 100.0},
    }
    d = ollama.durations(answer, 0.5)
    assert d == {
        "total_duration": 500_000_000,
        "load_duration": 380_000_000,
        "prompt_eval_count": 11,
        "prompt_eval_duration": 20_000_000,
        "eval_count": 5,
        "eval_duration": 100_000_000,
    }
    # timings alone (no usage) still count
    assert ollama.durations({"timings": {"prompt_n": 3, "predicted_n": 4}}, 0)["eval_count"] == 4


def test_whole_answers_chat_and_generate():
    answer = {
        "choices": [
            {
                "finish_reason": "length",
                "message": {"content": "Hello", "reasoning_content": "hmm"},
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }
    chat = ollama.chat_answer(answer, "tiny:latest", 0.1)
    assert chat["model"] == "tiny:latest" and chat["done"] is True
    assert chat["message"] == {"role": "assistant", "content": "Hello", "thinking": "hmm"}
    assert chat["done_reason"] == "length"
    assert chat["created_at"].endswith("Z")
    gen = ollama.chat_answer({"choices": [{"text": "raw", "finish_reason": "stop"}]}, "m", 0, "x")
    assert gen["response"] == "raw" and "message" not in gen


def _sse(*events) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def test_stream_chunks_become_ndjson_lines_split_anywhere():
    stream = (
        b": loading tiny\n\n"
        + _sse(
            {"choices": [{"delta": {"role": "assistant", "content": None}}]},
            {"choices": [{"delta": {"reasoning_content": "let me think"}}]},
            {"choices": [{"delta": {"content": "Hel"}}]},
            {"choices": [{"delta": {"content": "lo"}}]},
            {"choices": [{"delta": {}, "finish_reason": "stop"}], "timings": {"predicted_ms": 5}},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        )
        + b"data: [DONE]\n\n"
    )
    t = ollama.StreamTranslator("chat", "m", 0.0)
    lines = []
    for i in range(0, len(stream), 7):  # the socket may cut anywhere
        lines += t.feed(stream[i : i + 7])
    objs = [json.loads(x) for x in lines]
    assert [o["message"].get("content") for o in objs] == ["", "Hel", "lo"]
    assert objs[0]["message"]["thinking"] == "let me think"
    assert all(o["done"] is False and o["model"] == "m" for o in objs)
    last = json.loads(t.finish())
    assert last["done"] is True and last["done_reason"] == "stop"
    assert last["prompt_eval_count"] == 3 and last["eval_count"] == 2
    assert last["eval_duration"] == 5_000_000


def test_streamed_tool_call_fragments_are_sent_whole():
    t = ollama.StreamTranslator("chat", "m", 0.0)
    frag = {"index": 0, "id": "c", "type": "function", "function": {"name": "get_"}}
    lines = t.feed(
        _sse(
            {"choices": [{"delta": {"tool_calls": [frag]}}]},
            {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "w"}}]}}]},
            {
                "choices": [
                    {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"c'}}]}}
                ]
            },
            {
                "choices": [
                    {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '":1}'}}]}}
                ]
            },
            {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        )
    )
    assert len(lines) == 1
    calls = json.loads(lines[0])["message"]["tool_calls"]
    assert calls == [{"function": {"index": 0, "name": "get_w", "arguments": {"c": 1}}}]


def test_generate_stream_and_an_error_event():
    t = ollama.StreamTranslator("generate", "m", 0.0)
    lines = t.feed(_sse({"choices": [{"text": "abc", "index": 0}]}))
    assert json.loads(lines[0])["response"] == "abc"
    err = t.feed(_sse({"error": {"message": "instance 'x' failed mid-response", "code": 502}}))
    assert json.loads(err[0]) == {"error": "instance 'x' failed mid-response"}
    assert t.finish() == b""  # nothing after an error
    assert t.feed(_sse({"choices": [{"text": "late"}]})) == []


def test_error_messages_of_every_shape():
    assert ollama.error_message(404, b'{"error": {"message": "no such", "code": 404}}') == "no such"
    assert ollama.error_message(400, b'{"error": "plain"}') == "plain"
    assert ollama.error_message(502, b"Bad Gateway") == "Bad Gateway"
    assert ollama.error_message(500, b"") == "error 500"


def test_embed_requests_and_answers():
    assert ollama.embed_request({"input": "a"}, "m", legacy=False) == {"model": "m", "input": ["a"]}
    assert ollama.embed_request({"prompt": "a"}, "m", legacy=True)["input"] == ["a"]
    with pytest.raises(UsageError):
        ollama.embed_request({"input": [1]}, "m", legacy=False)
    answer = {
        "data": [{"index": 1, "embedding": [0.2]}, {"index": 0, "embedding": [0.1]}],
        "usage": {"prompt_tokens": 4},
    }
    out = ollama.embed_answer(answer, "m", 0.01, legacy=False)
    assert out["embeddings"] == [[0.1], [0.2]] and out["prompt_eval_count"] == 4
    assert ollama.embed_answer(answer, "m", 0, legacy=True) == {"embedding": [0.1]}


# -- names, durations, the index ---------------------------------------------------------


def test_name_candidates():
    assert ollama.name_candidates("tiny") == ["tiny"]
    assert ollama.name_candidates("tiny:latest") == ["tiny:latest", "tiny"]
    assert ollama.name_candidates("gemma:2b") == ["gemma:2b", "gemma-2b"]
    assert ollama.listed_name("tiny") == "tiny:latest"
    assert ollama.listed_name("a:b") == "a:b"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            ("bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"),
        ),
        ("huggingface.co/org/repo:q8_0", ("org/repo", "Q8_0")),
        ("org/repo:latest", ("org/repo", None)),
        ("org/repo", ("org/repo", None)),
        ("llama3.2", None),
        ("llama3.2:1b", None),
        ("a/b/c:Q4", None),
    ],
)
def test_hub_names(text, want):
    assert ollama.hub_name(text) == want


def test_pull_refs():
    assert ollama.pull_ref("hf.co/org/repo:Q4_K_M") == "org/repo:Q4_K_M"
    assert ollama.pull_ref("org/repo:latest") == "org/repo"
    with pytest.raises(UsageError, match="Hugging Face"):
        ollama.pull_ref("llama3.2")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        (-1, -1.0),
        ("-1", -1.0),
        ("-1m", -60.0),
        (300, 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("10s", 10.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
    ],
)
def test_keep_alive_durations(value, seconds):
    assert ollama.keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "", [1], {"m": 5}])
def test_bad_keep_alive(value):
    with pytest.raises(UsageError):
        ollama.keep_alive_seconds(value)


def test_idle_ttl_of_keep_alive():
    assert ollama.idle_ttl_for(-1) == 0.0  # forever: corral's "never"
    assert ollama.idle_ttl_for(300) == 300.0


def test_details_parameter_size_and_quant():
    meta = {"architecture": "gemma3", "size_label": None, "parameter_count": 268_098_176}
    d = ollama.details(meta, "Q4_K_M")
    assert d["format"] == "gguf" and d["family"] == "gemma3" and d["families"] == ["gemma3"]
    assert d["parameter_size"] == "268.1M" and d["quantization_level"] == "Q4_K_M"
    assert ollama.parameter_size("1B", 999) == "1B"
    assert ollama.parameter_size(None, 7_000_000_000) == "7B"
    assert ollama.parameter_size(None, None) == ""


def test_model_info_leaves_out_long_arrays():
    from corral.gguf import ArraySummary

    kv = {
        "general.architecture": "llama",
        "tokenizer.ggml.tokens": ["a"] * 1000,
        "tokenizer.ggml.merges": ArraySummary("string", 100000),
        "llama.rope.dimension_sections": [1, 2, 3],
    }
    info = ollama.model_info(kv)
    assert info["tokenizer.ggml.tokens"] is None and info["tokenizer.ggml.merges"] is None
    assert info["llama.rope.dimension_sections"] == [1, 2, 3]
    assert len(ollama.model_info(kv, verbose=True)["tokenizer.ggml.tokens"]) == 1000
    json.dumps(info)


def test_capabilities():
    kv = {"general.architecture": "gemma3", "tokenizer.chat_template": "{% if tools %}"}
    assert ollama.capabilities(kv, mmproj=True) == ["completion", "vision", "tools"]
    assert ollama.capabilities({"general.architecture": "bert"}, False) == ["embedding"]


def test_ctx_and_parameters_of_an_instance():
    flags = [["--ctx-size", "4096"], ["--temp", "0.7"], ["--no-mmap", None]]
    assert ollama.ctx_of(flags, []) == 4096
    assert ollama.ctx_of([], ["llama-server", "-c", "2048"]) == 2048
    assert ollama.ctx_of([], []) is None
    assert ollama.parameters_text(flags).split("\n") == [
        "num_ctx         4096",
        "temperature     0.7",
    ]


def test_pull_lines_report_each_file_that_moved():
    sent: dict = {}
    view = {"files": {"a/x.gguf": {"done": 10, "total": 100}, "b.gguf": {"done": 0, "total": 5}}}
    lines = ollama.pull_lines(view, sent)
    assert [line["status"] for line in lines] == ["downloading x.gguf", "downloading b.gguf"]
    assert lines[0]["total"] == 100 and lines[0]["completed"] == 10
    assert lines[0]["digest"].startswith("sha256:")
    assert ollama.pull_lines(view, sent) == []  # nothing moved


def test_bodies_are_checked():
    with pytest.raises(UsageError, match="not valid JSON"):
        ollama.check_body(b"{nope")
    with pytest.raises(UsageError, match="JSON object"):
        ollama.check_body(b"[1]")
    with pytest.raises(UsageError, match="empty"):
        ollama.check_body(b"")
    with pytest.raises(UsageError, match="model is required"):
        ollama.model_of({})
    assert ollama.model_of({"name": "old-client"}) == "old-client"
    with pytest.raises(UsageError):
        ollama.wants_stream({"stream": "yes"})


# -- hostile bodies ----------------------------------------------------------------------

_FIELDS = {
    "model": any_json,
    "messages": any_json
    | st.lists(
        st.fixed_dictionaries(
            {"role": any_json, "content": any_json},
            optional={"images": any_json, "tool_calls": any_json, "tool_name": any_json},
        ),
        max_size=3,
    ),
    "prompt": any_json,
    "system": any_json,
    "images": any_json,
    "raw": any_json,
    "input": any_json,
    "options": any_json | st.dictionaries(st.sampled_from(list(ollama.OPTIONS)), any_json),
    "format": any_json,
    "think": any_json,
    "tools": any_json,
    "stream": any_json,
    "keep_alive": any_json,
    "dimensions": any_json,
}
bodies = st.fixed_dictionaries({}, optional=_FIELDS)


@profile(300)
@given(body=bodies)
def test_hostile_bodies_are_usage_errors_or_translate(body):
    """Whatever the body, the translation answers or raises UsageError (a 400), nothing
    else; what it makes is JSON."""
    for translate in (
        lambda: ollama.chat_request(body, "m"),
        lambda: ollama.generate_request(body, "m"),
        lambda: ollama.embed_request(body, "m", legacy=False),
        lambda: ollama.embed_request(body, "m", legacy=True),
        lambda: ollama.keep_alive_seconds(body.get("keep_alive")),
        lambda: ollama.num_ctx_of(body),
        lambda: ollama.model_of(body),
        lambda: ollama.is_empty("chat", body),
    ):
        try:
            out = translate()
        except UsageError:
            continue
        json.dumps(out)


@profile(200)
@given(
    stream=st.lists(
        st.binary(max_size=40)
        | st.sampled_from(
            [
                b"data: ",
                b"\n",
                b"[DONE]",
                b'{"choices":[{"delta":{"content":"x"}}]}',
                b'{"error":1}',
            ]
        ),
        max_size=20,
    )
)
def test_any_bytes_through_the_stream_translator(stream):
    t = ollama.StreamTranslator("chat", "m", 0.0)
    for piece in stream:
        for line in t.feed(piece):
            json.loads(line)
    t.finish()


def test_odd_chunks_are_skipped():
    t = ollama.StreamTranslator("chat", "m", 0.0)
    odd = [{"choices": [1]}, {"choices": "x"}, {"choices": [{"delta": 3}]}, [1], "s"]
    assert t.feed(_sse(*odd)) == []
    assert json.loads(t.finish())["done"] is True


def _token_chunk(text: str, ascii_only: bool) -> bytes:
    """llama-server's chunk for one token, in its key order (nlohmann sorts keys)."""
    obj = {
        "choices": [{"finish_reason": None, "index": 0, "delta": {"content": text}}],
        "created": 1,
        "id": "chatcmpl-x",
        "model": "m",
        "object": "chat.completion.chunk",
    }
    raw = json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":"))
    return b"data: " + raw.encode() + b"\n\n"


@given(text=st.text(min_size=1, max_size=30), ascii_only=st.booleans())
def test_the_byte_path_for_token_chunks_says_what_parsing_says(text, ascii_only):
    """A plain token chunk is copied, not parsed: the line must read back as the parsed
    path's line (same content, same fields) whatever the text and its escaping."""
    fast = _token_chunk(text, ascii_only)
    assert ollama._token_literal(fast.rstrip(b"\n")) is not None  # it takes the byte path
    parsed = _sse({"choices": [{"delta": {"content": text}, "index": 0}]})  # other order
    assert ollama._token_literal(parsed.rstrip(b"\n")) is None
    one, other = (
        ollama.StreamTranslator("chat", "m", 0.0),
        ollama.StreamTranslator("chat", "m", 0.0),
    )
    [a], [b] = one.feed(fast), other.feed(parsed)
    a, b = json.loads(a), json.loads(b)
    assert a.pop("created_at").endswith("Z") and b.pop("created_at").endswith("Z")
    assert (
        a == b == {"model": "m", "message": {"role": "assistant", "content": text}, "done": False}
    )


@pytest.mark.parametrize(
    "line",
    [
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"\\x"}}]}',
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"\xff"}}]}',
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"a\tb"}}]}',
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":""}}]}',
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"a"}}],'
        b'"timings":{"predicted_ms":1}}',
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"a"}}],'
        b'"usage":{"completion_tokens":1}}',
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"a",'
        b'"reasoning_content":"b"}}]}',
    ],
)
def test_what_the_byte_path_leaves_to_parsing(line):
    """Not JSON, an empty token, or a chunk with more than a token: parsed, so a broken
    literal never reaches a client and timings, usage and reasoning are never lost."""
    assert ollama._token_literal(line) is None
    t = ollama.StreamTranslator("chat", "m", 0.0)
    for out in t.feed(line + b"\n\n"):
        json.loads(out)
    if b'"timings"' in line:
        assert json.loads(t.finish())["eval_duration"] == 1_000_000


def test_generate_with_a_suffix_is_llama_servers_infill():
    body = {
        "model": "coder",
        "prompt": "def add(a, b):\n    return ",
        "suffix": "\n\nprint(add(1, 2))\n",
        "raw": True,  # as Continue sends it: raw does not matter for infill
        "options": {"num_predict": 16, "temperature": 0, "stop": ["\n\n"]},
    }
    endpoint, out, images = ollama.generate_request(body, "coder-q4")
    assert (endpoint, images) == ("/infill", False)
    assert out == {
        "model": "coder-q4",
        "input_prefix": "def add(a, b):\n    return ",
        "input_suffix": "\n\nprint(add(1, 2))\n",
        "prompt": "",
        "max_tokens": 16,
        "temperature": 0,
        "stop": ["\n\n"],
        "stream": True,
    }
    for bad, said in (
        ({"suffix": 3}, "suffix must be a string"),
        ({"suffix": "x", "images": ["aGk="]}, "images cannot be combined"),
        ({"suffix": "x", "format": "json"}, "format cannot be combined"),
    ):
        with pytest.raises(UsageError, match=said):
            ollama.generate_request({"prompt": "p", **bad}, "m")


def test_infills_own_answers_stream_and_whole():
    t = ollama.StreamTranslator("generate", "coder", 0.0)
    stream = _sse(
        {"index": 0, "content": "a", "stop": False},
        {"index": 0, "content": " + b", "stop": False},
        {
            "index": 0,
            "content": "",
            "stop": True,
            "stop_type": "limit",
            "tokens_predicted": 2,
            "tokens_evaluated": 11,
            "timings": {"prompt_ms": 3, "predicted_ms": 4},
        },
    )
    lines = [json.loads(x) for x in t.feed(stream)]
    assert [x["response"] for x in lines] == ["a", " + b"]
    last = json.loads(t.finish())
    assert last["done"] and last["done_reason"] == "length"
    assert (last["prompt_eval_count"], last["eval_count"]) == (11, 2)
    assert last["eval_duration"] == 4_000_000
    whole = {"content": "a + b", "stop": True, "stop_type": "eos", "tokens_predicted": 2}
    out = ollama.chat_answer(whole, "coder", 0.1, "generate")
    assert out["response"] == "a + b" and out["done_reason"] == "stop"
