"""The official ``anthropic`` SDK through corral's router, against the fake llama-server:
messages plain and streamed, count_tokens, and its error classes for corral's refusals
(an unknown model, a missing key, a full queue's shape), so Claude Code and the SDK's
users need nothing but ``ANTHROPIC_BASE_URL``."""

from __future__ import annotations

import anthropic
import pytest

from tests.integration.conftest import api, launch

MESSAGES = [{"role": "user", "content": "Say hello."}]


def sdk(daemon, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=daemon.settings.daemon_url, api_key=key, max_retries=0, timeout=60
    )


@pytest.fixture
def claude(daemon, model_file) -> str:
    launch(daemon, model_file, name="claude-local")
    return "claude-local"


def test_messages_plain_and_streamed(daemon, claude):
    c = sdk(daemon)
    msg = c.messages.create(model=claude, max_tokens=6, messages=MESSAGES)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == claude
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 6
    assert msg.usage.input_tokens > 0

    with c.messages.stream(model=claude, max_tokens=64, messages=MESSAGES) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 2 and "".join(pieces) == final.content[0].text
    assert final.stop_reason == "end_turn" and final.model == claude


def test_count_tokens(daemon, claude):
    counted = sdk(daemon).messages.count_tokens(model=claude, messages=MESSAGES)
    assert counted.input_tokens > 0


def test_errors_are_the_sdks_own_classes(daemon, claude):
    c = sdk(daemon)
    with pytest.raises(anthropic.NotFoundError) as err:
        c.messages.create(model="no-such-model", max_tokens=4, messages=MESSAGES)
    assert "no-such-model" in err.value.message
    assert err.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):  # streamed: refused before the stream
        with c.messages.stream(model="no-such-model", max_tokens=4, messages=MESSAGES) as s:
            list(s.text_stream)

    status, made = api(daemon, "POST", "/api/v1/keys", {"name": "sdk", "scope": "inference"})
    assert status == 201
    with pytest.raises(anthropic.AuthenticationError):  # keys exist now: "unused" is wrong
        c.messages.create(model=claude, max_tokens=4, messages=MESSAGES)
    keyed = sdk(daemon, made["secret"])  # the SDK sends it as x-api-key
    assert keyed.messages.create(model=claude, max_tokens=4, messages=MESSAGES).content
    assert keyed.messages.count_tokens(model=claude, messages=MESSAGES).input_tokens > 0


def test_claude_codes_beta_query_and_bearer_token(daemon, claude):
    """Claude Code posts to ``/v1/messages?beta=true`` with ``anthropic-beta`` headers, and
    with ANTHROPIC_AUTH_TOKEN sends the key as ``Authorization: Bearer``."""
    status, made = api(daemon, "POST", "/api/v1/keys", {"name": "cc", "scope": "inference"})
    assert status == 201
    c = anthropic.Anthropic(
        base_url=daemon.settings.daemon_url,
        auth_token=made["secret"],
        max_retries=0,
        timeout=60,
        default_headers={"anthropic-beta": "claude-code-20250219"},
    )
    raw = c.messages.with_raw_response.create(
        model=claude, max_tokens=4, messages=MESSAGES, extra_query={"beta": "true"}
    )
    assert "beta=true" in str(raw.http_request.url)
    assert raw.parse().model == claude and raw.parse().content[0].text
    counted = c.messages.count_tokens(model=claude, messages=MESSAGES, extra_query={"beta": "true"})
    assert counted.input_tokens > 0
