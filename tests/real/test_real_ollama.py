"""The Ollama API in front of the real llama-server and gemma: the official ``ollama`` SDK
chats (streamed and not), generates and embeds through corral's translation."""

from __future__ import annotations

import json
from pathlib import Path

import ollama
import pytest

from tests.conftest import DaemonProcess

pytestmark = pytest.mark.real


def test_ollama_sdk_against_the_real_server(real_daemon_env, real_model: Path):
    d = DaemonProcess(real_daemon_env).start()
    try:
        out = d.cli("import", str(real_model), "--json")
        assert out.returncode == 0, out.stderr
        [model] = [m["name"] for m in json.loads(d.cli("ls", "--json").stdout)]
        with ollama.Client(host=d.settings.daemon_url, timeout=180) as c:
            _smoke(d, c, model)
    finally:
        d.stop()
        from corral.supervisor.offline import stop_all_offline

        stop_all_offline(d.settings, timeout=5.0)


def _smoke(d: DaemonProcess, c: ollama.Client, model: str) -> None:
    """List, show, chat streamed, generate, embed (through a preset adding --embeddings)."""
    [listed] = c.list().models
    assert listed.model == f"{model}:latest" and listed.details.family == "gemma3"
    shown = c.show(listed.model)  # this GGUF has no chat template: llama-server's default
    assert shown.modelinfo["general.architecture"] == "gemma3"
    assert shown.modelinfo["gemma3.context_length"] > 0

    parts = list(
        c.chat(
            model=listed.model,
            messages=[{"role": "user", "content": "Count to three."}],
            options={"num_predict": 12, "temperature": 0},
            stream=True,
        )
    )  # starts it on demand
    assert parts[-1].done and parts[-1].eval_count > 0
    assert parts[-1].eval_duration > 0 and parts[-1].prompt_eval_count > 0
    assert "".join(p.message.content for p in parts).strip()

    gen = c.generate(model=model, prompt="Say hello.", options={"num_predict": 8})
    assert gen.done and gen.response.strip()

    # embeddings need --embeddings: a preset adds it (as with the openai client)
    d.client.request(
        "PUT",
        "/api/v1/presets/gemma-embed",
        {"model": model, "flags": ["--embeddings", "--pooling", "mean"]},
    )
    emb = c.embed(model="gemma-embed", input=["hello world", "goodbye"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) > 100
