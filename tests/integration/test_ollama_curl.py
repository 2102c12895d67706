"""Ollama's documentation calls its API with ``curl -d '{...}'``, which sends the JSON
body as ``application/x-www-form-urlencoded``. corral reads such a body as JSON on the
Ollama paths when no ``Origin`` came with it, and keeps refusing it from a browser (an
``Origin``), where the content-type rule is what keeps HTML forms out."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_security import call

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("path", ["/api/show", "/api/chat", "/api/generate", "/api/embed"])
def test_curl_style_bodies_are_read_as_json(daemon, path):
    body = json.dumps({"model": "no-such-model", "prompt": "hi", "input": "hi"}).encode()
    status, _, answer = call(daemon, "POST", path, body, FORM)
    # read and routed: the model is unknown (Ollama's 404), not a 415 for the type
    assert status == 404, answer
    assert "no-such-model" in answer["error"]


def test_a_browser_form_is_still_refused(daemon):
    port = daemon.settings.port
    body = json.dumps({"model": "no-such-model"}).encode()
    same_site = {**FORM, "Origin": f"http://127.0.0.1:{port}"}
    status, _, answer = call(daemon, "POST", "/api/show", body, same_site)
    assert status == 415 and "application/json" in answer["error"]
    status, _, answer = call(
        daemon, "POST", "/api/show", body, {**FORM, "Origin": "http://evil.example"}
    )
    assert status == 403
    # corral's own API keeps the rule without an Origin too
    status, _, _ = call(daemon, "POST", "/api/v1/instances", body, FORM)
    assert status == 415


def test_an_ollama_port_of_zero_names_no_host():
    """``ollama_port = 0`` is off: ``Host: 127.0.0.1:0`` must not pass as this daemon."""
    from corral.api.security import _allowed_hosts
    from corral.settings import Settings

    hosts = _allowed_hosts(Settings(port=9380, ollama_port=0))
    assert "127.0.0.1:9380" in hosts and not any(h.endswith(":0") for h in hosts)
    assert "localhost:11434" in _allowed_hosts(Settings(port=9380, ollama_port=11434))
