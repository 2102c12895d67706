"""The fake llama-server's inference endpoints beyond plain chat: shapes copied from the
real server (server-task.cpp), which the router and the Ollama translation are tested
against; and its record of what reached it."""

from __future__ import annotations

import json

from tests.unit.test_fake_llama_server import spawn  # noqa: F401 (the fixture)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    }
]


def sse(payload: bytes) -> list[tuple[str | None, dict]]:
    out, name = [], None
    for line in payload.decode().splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and line != "data: [DONE]":
            out.append((name, json.loads(line[6:])))
            name = None
    return out


def test_chat_tools_response_format_usage_and_timings(spawn):  # noqa: F811
    fake = spawn()
    fake.wait_ready()
    ask = [{"role": "user", "content": "please call the tool for Paris"}]
    status, res = fake.json("POST", "/v1/chat/completions", {"messages": ask, "tools": TOOLS})
    assert status == 200
    [choice] = res["choices"]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["type"] == "function"
    assert json.loads(call["function"]["arguments"]) == {"city": "fake", "days": 1}
    assert res["usage"]["prompt_tokens"] > 0 and res["timings"]["predicted_n"] == 1
    # no "call" in the prompt: an answer in words, tools or not
    status, res = fake.json(
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS},
    )
    assert (
        res["choices"][0]["message"]["content"] and "tool_calls" not in res["choices"][0]["message"]
    )

    status, raw = fake.request(
        "POST", "/v1/chat/completions", {"messages": ask, "tools": TOOLS, "stream": True}
    )
    events = [d for _, d in sse(raw)]
    calls = [c for e in events for ch in e["choices"] for c in ch["delta"].get("tool_calls", [])]
    assert calls and calls[0]["function"]["name"] == "get_weather" and calls[0]["index"] == 0
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls" and events[-1]["timings"]

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": fmt}
    status, res = fake.json("POST", "/v1/chat/completions", body)
    assert json.loads(res["choices"][0]["message"]["content"]) == {"name": "fake", "ok": True}
    status, raw = fake.request("POST", "/v1/chat/completions", {**body, "stream": True})
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for _, e in sse(raw) if e["choices"]
    )
    assert json.loads(text) == {"name": "fake", "ok": True}
    body["response_format"] = {"type": "json_object"}
    status, res = fake.json("POST", "/v1/chat/completions", body)
    assert json.loads(res["choices"][0]["message"]["content"]) == {"answer": "Hello"}


def test_embeddings_of_several_inputs_in_both_shapes(spawn):  # noqa: F811
    fake = spawn("--embeddings")
    fake.wait_ready()
    status, res = fake.json("POST", "/v1/embeddings", {"input": ["a", "b", "c"]})
    assert status == 200 and [d["index"] for d in res["data"]] == [0, 1, 2]
    assert res["data"][0]["embedding"] != res["data"][1]["embedding"]
    assert res["usage"]["prompt_tokens"] == 6
    status, res = fake.json("POST", "/embedding", {"content": "a"})
    assert status == 200 and res[0]["index"] == 0 and len(res[0]["embedding"][0]) == 8


def test_anthropic_messages_and_their_stream_events(spawn):  # noqa: F811
    fake = spawn()
    fake.wait_ready()
    body = {"max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    status, res = fake.json("POST", "/v1/messages", body)
    assert status == 200 and res["type"] == "message" and res["stop_reason"] == "max_tokens"
    assert res["usage"]["output_tokens"] == 3 and res["content"][0]["type"] == "text"
    status, raw = fake.request("POST", "/v1/messages", {**body, "stream": True})
    names = [n for n, _ in sse(raw)]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    status, res = fake.json("POST", "/v1/messages/count_tokens", body)
    assert (
        status == 200 and res == {"input_tokens": res["input_tokens"]} and res["input_tokens"] > 0
    )


def test_tokenize_detokenize_round_trip_and_the_request_record(spawn):  # noqa: F811
    fake = spawn()
    fake.wait_ready()
    status, res = fake.json("POST", "/tokenize", {"content": "Hello there you", "model": "m1"})
    assert status == 200 and len(res["tokens"]) == 3
    status, back = fake.json("POST", "/detokenize", {"tokens": res["tokens"]})
    assert back == {"content": "Hello there you"}
    status, pieces = fake.json("POST", "/tokenize", {"content": "Hello", "with_pieces": True})
    assert pieces["tokens"] == [{"id": res["tokens"][0], "piece": "Hello"}]
    status, res = fake.json("POST", "/infill", {"input_prefix": "a"})
    assert status == 400 and "input_suffix" in res["error"]["message"]
    status, res = fake.json("POST", "/rerank", {"query": "q", "documents": ["d"]})
    assert status == 501  # not started with --reranking, as the real one
    status, got = fake.json("GET", "/_fake/requests")
    got = [r for r in got if r["path"] != "/health"]  # wait_ready's probes are there too
    assert [r["path"] for r in got] == [
        "/tokenize",
        "/detokenize",
        "/tokenize",
        "/infill",
        "/rerank",
    ]
    assert got[0]["model"] == "m1" and got[1]["model"] is None
    assert got[0]["headers"]["content-type"] == "application/json"
