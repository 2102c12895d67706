"""The router in front of the real llama-server: the gemma model started on demand by the
official openai client, streaming and non-streaming chat, the model list, embeddings
through a preset that adds --embeddings, and usage counters read from real timings."""

from __future__ import annotations

import json
from pathlib import Path

import openai

from tests.conftest import DaemonProcess, wait_for


def test_openai_client_through_the_router_against_the_real_server(
    real_daemon_env, real_model: Path
):
    d = DaemonProcess(real_daemon_env).start()
    try:
        out = d.cli("import", str(real_model), "--json")
        assert out.returncode == 0, out.stderr
        [model] = [m["name"] for m in json.loads(d.cli("ls", "--json").stdout)]
        c = openai.OpenAI(
            base_url=d.settings.daemon_url + "/v1", api_key="unused", max_retries=0, timeout=180
        )
        assert model in {m.id for m in c.models.list().data}

        reply = c.chat.completions.create(
            model=model,
            max_tokens=8,
            temperature=0,
            messages=[{"role": "user", "content": "Say hello."}],
        )  # starts it on demand
        assert reply.choices[0].message.content.strip()
        assert reply.usage.completion_tokens > 0
        [inst] = d.client.request("GET", "/api/v1/instances")
        assert inst["origin"] == "router" and inst["state"] == "ready"

        stream = c.chat.completions.create(
            model=model,
            max_tokens=8,
            temperature=0,
            stream=True,
            messages=[{"role": "user", "content": "Count to three."}],
        )
        pieces = [
            ch.choices[0].delta.content
            for ch in stream
            if ch.choices and ch.choices[0].delta.content
        ]
        assert len(pieces) >= 2

        # counted when the upstream answer has ended, a moment after the client saw [DONE]
        usage = wait_for(
            lambda: (
                (u := d.client.request("GET", "/api/v1/usage")["models"][model])["requests"] == 2
                and u
            ),
            message="both requests counted",
        )
        assert usage["errors"] == 0
        assert usage["tokens_out"] >= reply.usage.completion_tokens + len(pieces) - 1
        assert usage["tokens_per_second"] > 0  # from llama-server's own timings

        # embeddings need --embeddings: a preset adds it, and routes by its alias
        d.client.request(
            "PUT",
            "/api/v1/presets/gemma-embed",
            {
                "model": model,
                "flags": ["--embeddings", "--pooling", "mean"],
                "aliases": ["embedder"],
            },
        )
        emb = c.embeddings.create(model="embedder", input="hello world")
        vector = emb.data[0].embedding
        assert len(vector) > 100 and any(v != 0 for v in vector)
        presets = [
            i for i in d.client.request("GET", "/api/v1/instances") if i["preset"] == "gemma-embed"
        ]
        assert len(presets) == 1 and "--embedding" in presets[0]["argv"]  # canonical spelling
    finally:
        d.stop()
        from corral.supervisor.offline import stop_all_offline

        stop_all_offline(d.settings, timeout=10.0)
