"""``corral setup``'s Ollama step: offer ``ollama_port`` only when nothing listens there.

Ollama's port is the module constant ``OLLAMA_PORT``, pointed here at a free test port
(never the real 11434, which may be the user's Ollama); "taken" is a socket the test
itself listens on. A default build is registered first so setup installs nothing.
"""

from __future__ import annotations

import socket
import tomllib

import pytest
from click.testing import CliRunner

from corral.cli import builds as cli_builds, cli
from corral.settings import load_settings
from corral.store import builds as build_table
from corral.store.db import Store
from tests.conftest import free_port

COMMENTED = "# my corral\nidle_ttl = 900  # 15 minutes\n"


@pytest.fixture
def port(monkeypatch, corral_home, fake_binary) -> int:
    """A free port standing in for 11434, a config.toml with comments, a default build."""
    corral_home.mkdir(mode=0o700, parents=True)
    (corral_home / "config.toml").write_text(COMMENTED)
    s = load_settings()
    s.ensure_dirs()
    store = Store(s.db_path)
    try:
        build_table.set_default(store, build_table.add(store, str(fake_binary), "test").id)
    finally:
        store.close()
    chosen = free_port()
    monkeypatch.setattr(cli_builds, "OLLAMA_PORT", chosen)
    return chosen


def setup(*args: str, input: str | None = None):
    out = CliRunner().invoke(cli, ["setup", "--backend", "cpu", *args], input=input)
    assert out.exit_code == 0, out.output
    return out.output


def config(corral_home) -> str:
    return (corral_home / "config.toml").read_text()


def ollama_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "Ollama" in line]


def test_ollama_flag_sets_the_port_and_keeps_the_comments(port, corral_home):
    out = setup("--ollama")
    text = config(corral_home)
    assert text.startswith(COMMENTED) and tomllib.loads(text)["ollama_port"] == port
    (line,) = ollama_lines(out)
    assert f"ollama_port = {port} written" in line and "next corral serve" in line
    assert "Open WebUI, Continue, the ollama SDKs" in line
    assert load_settings().ollama_port == port  # what the next `corral serve` reads
    again = setup("--ollama")  # set now: said, not written twice
    assert ollama_lines(again) == [f"Ollama API: on port {port} too (setting ollama_port)"]
    assert config(corral_home) == text


def test_a_taken_port_is_one_line_and_changes_nothing(port, corral_home):
    with socket.socket() as other:  # "something else listens on 11434"
        other.bind(("127.0.0.1", port))
        other.listen()
        out = setup("--ollama")
    assert ollama_lines(out) == [
        f"Ollama API: something else listens on port {port} (maybe Ollama itself); "
        "ollama_port stays off"
    ]
    assert config(corral_home) == COMMENTED


def test_without_a_terminal_it_is_not_asked_nor_probed(port, corral_home, monkeypatch):
    def no_probe(self, host, p):
        raise AssertionError(f"probed {host}:{p}")

    monkeypatch.setattr("corral.supervisor.process.ProcessOps.port_free", no_probe)
    (line,) = ollama_lines(setup())  # CliRunner's stdin is no terminal
    assert line.startswith("Ollama API: not asked (no terminal, or --yes)")
    assert "corral setup --ollama" in line
    assert config(corral_home) == COMMENTED
    assert ollama_lines(setup("--no-ollama")) == []
    assert config(corral_home) == COMMENTED


@pytest.mark.parametrize("answer, written", [("y\n", True), ("\n", False), ("n\n", False)])
def test_on_a_terminal_it_asks_and_the_default_is_no(
    port, corral_home, monkeypatch, answer, written
):
    monkeypatch.setattr(cli_builds, "_interactive", lambda yes: not yes)
    # the starter-model question comes next: answered no, and no directory to import
    out = setup(input=answer + "n\n\n")
    assert f"Nothing listens on Ollama's port {port}" in out and "[y/N]" in out
    assert ("ollama_port" in tomllib.loads(config(corral_home))) is written
    assert config(corral_home).startswith(COMMENTED)


def test_a_port_set_to_off_is_left_alone(port, corral_home):
    (corral_home / "config.toml").write_text(COMMENTED + "ollama_port = 0\n")
    out = setup("--ollama")
    assert ollama_lines(out) == [
        "Ollama API: ollama_port = 0 (off) is set (config.toml or env): left so"
    ]
    assert config(corral_home) == COMMENTED + "ollama_port = 0\n"
