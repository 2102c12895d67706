"""``corral run``'s own options: the same checks and the same launch body whether they
come before MODEL (click parses them) or after it (among the llama-server flags).

The daemon is replaced by a recorder of the one request ``run`` sends; the real daemon
path is tests/integration/test_cli.py's.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from corral.cli import cli, instances as cli_instances
from corral.types import RESTART_POLICIES


class Recorder:
    """Stands in for the daemon client: keeps the body, answers a launched instance."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def request(self, method, path, body=None, timeout=None):
        assert (method, path) == ("POST", "/api/v1/instances")
        self.bodies.append(body)
        return {"name": "m", "state": "ready", "port": 8090, "url": "http://x", "placement": None}


@pytest.fixture
def daemon(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(cli_instances, "ensure_daemon", lambda s: recorder)
    return recorder


def run(*args: str):
    return CliRunner().invoke(cli, ["run", *args])


OWN = ["--port", "8090", "--restart", "always", "--idle-ttl", "5", "--env", "A=1", "--pin"]


def test_options_before_and_after_model_give_the_same_launch(daemon):
    before = run(*OWN, "--timeout", "30", "m.gguf", "-c", "1024")
    after = run("m.gguf", *OWN, "--timeout=30", "-c", "1024")
    assert before.exit_code == after.exit_code == 0, (before.output, after.output)
    first, second = daemon.bodies
    assert first == second
    assert first["port"] == 8090 and first["restart"] == "always" and first["pinned"] is True
    assert (first["idle_ttl"], first["timeout"], first["env"]) == (5.0, 30.0, {"A": "1"})
    assert first["flags"] == ["-c", "1024"]


def test_env_given_on_both_sides_is_collected(daemon):
    assert run("--env", "A=1", "m.gguf", "--env", "B=2").exit_code == 0
    assert daemon.bodies[0]["env"] == {"A": "1", "B": "2"}


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--port", "0", "--port must be a port number (1-65535), got '0'"),
        ("--port", "eighty", "--port must be a port number"),
        ("--timeout", "-1", "--timeout must be a number of seconds >= 0"),
        ("--idle-ttl", "soon", "--idle-ttl must be a number of seconds >= 0"),
        ("--build", "latest", "--build must be a number, got 'latest'"),
    ],
)
def test_a_bad_value_is_the_same_one_line_error_before_and_after_model(
    daemon, option, value, words
):
    for args in ((option, value, "m.gguf"), ("m.gguf", option, value)):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(f"error: {words}") and result.stderr.count("\n") == 1
    assert daemon.bodies == []


def test_a_bad_restart_policy_after_model_names_the_policies(daemon):
    result = run("m.gguf", "--restart", "sometimes")
    assert result.exit_code == 2
    assert f"one of {', '.join(RESTART_POLICIES)}" in result.stderr
    assert daemon.bodies == []


def test_the_help_lists_the_restart_policies_from_corral_types():
    text = run("--help").output
    assert "[" + "|".join(RESTART_POLICIES) + "]" in text


def test_a_preset_without_model_takes_the_first_token_as_a_flag(daemon):
    assert run("--preset", "chat", "-c", "2048").exit_code == 0
    body = daemon.bodies[0]
    assert (body["model"], body["preset"], body["flags"]) == (None, "chat", ["-c", "2048"])


def test_neither_model_nor_preset_is_a_usage_error(daemon):
    result = run("--name", "x")
    assert result.exit_code == 2 and "give MODEL" in result.stderr
    assert daemon.bodies == []
