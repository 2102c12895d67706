"""llama-server's other endpoints through the router, with the real build and gemma: the
official ``anthropic`` SDK (plain, streamed, count_tokens), ``/tokenize`` and
``/detokenize`` round-tripping, ``/apply-template``, ``/infill`` relayed as the real
server answers it, and the ``model`` clients see being corral's name (``--alias``)."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import running_daemon
from tests.integration.conftest import api

pytestmark = pytest.mark.real

ASK = [{"role": "user", "content": "Say hello."}]


def test_real_server_behind_every_dialect(real_daemon_env, real_model: Path):
    with running_daemon(real_daemon_env) as d:
        out = d.cli("import", str(real_model), "--json")
        assert out.returncode == 0, out.stderr
        [model] = [m["name"] for m in json.loads(d.cli("ls", "--json").stdout)]
        a = anthropic.Anthropic(
            base_url=d.settings.daemon_url, api_key="unused", max_retries=0, timeout=180
        )
        msg = a.messages.create(model=model, max_tokens=8, messages=ASK)
        assert msg.content[0].type == "text" and msg.content[0].text.strip()
        assert msg.model == model and msg.usage.output_tokens > 0  # --alias: not the path
        with a.messages.stream(model=model, max_tokens=8, messages=ASK) as s:
            pieces = list(s.text_stream)
            final = s.get_final_message()
        assert len(pieces) >= 2 and final.content[0].text == "".join(pieces)
        assert a.messages.count_tokens(model=model, messages=ASK).input_tokens > 3

        o = openai.OpenAI(
            base_url=d.settings.daemon_url + "/v1", api_key="unused", max_retries=0, timeout=180
        )
        reply = o.chat.completions.create(model=model, max_tokens=4, messages=ASK)
        assert reply.model == model

        status, toks = api(d, "POST", "/tokenize", {"model": model, "content": "Hello corral"})
        assert status == 200 and len(toks["tokens"]) >= 2, toks
        status, text = api(d, "POST", "/detokenize", {"model": model, "tokens": toks["tokens"]})
        assert status == 200 and text["content"] == "Hello corral"
        status, tmpl = api(d, "POST", "/apply-template", {"model": model, "messages": ASK})
        # the test gemma's GGUF has no chat template: llama-server falls back to ChatML
        assert status == 200 and "user\nSay hello." in tmpl["prompt"], tmpl

        # gemma-3 has no FIM tokens: the real server's own refusal comes back as it is
        body = {"model": model, "input_prefix": "def add(a, b):\n    return ", "input_suffix": ""}
        status, answer = api(d, "POST", "/infill", body)
        assert status == 501, answer
        assert "Infill is not supported by this model" in answer["error"]["message"]
        [inst] = d.client.request("GET", "/api/v1/instances")
        assert inst["argv"][inst["argv"].index("--alias") + 1] == model
