"""Hostile arguments to the CLI commands that work without a daemon.

Property: ``CliRunner(catch_exceptions=False)`` never sees an exception escape (that
would be a traceback for the user), an error is one ``error: ...`` line (or click's own
usage message) with a non-zero exit code that is not 1 (1 is "internal error"), and
nothing on stdout carries a control character from the input. Commands that talk to
the daemon (run, ps, preset ...) are covered through the API in test_api_bad_input.py:
the CLI only forwards their arguments. Deterministic: see conftest.profile.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from corral.cli import cli
from tests.property.conftest import TRIED, ints, profile, text

#: Arguments click can carry (argv holds no NUL; the shell cannot pass one either).
arg = text.map(lambda t: t.replace("\x00", "")).filter(lambda t: not t.startswith("-"))
arg_or_int = st.one_of(arg, ints.map(str))


def run(argv: list[str], op: str):
    TRIED[f"corral {op}"] += 1
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    if result.exit_code:
        assert result.exit_code != 1, (argv, result.output)
        last = result.output.strip().splitlines()[-1] if result.output.strip() else ""
        assert last.startswith(("error: ", "Error: ")) or "error: " in result.output, (
            argv,
            result.output,
        )
    return result


@pytest.fixture
def cli_env(corral_home: Path, fake_binary: Path, monkeypatch: pytest.MonkeyPatch, tmp_path):
    from tests.fakes.fake_hub import FakeHub

    model = tmp_path / "models" / "tiny-Q4_K_M.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    monkeypatch.setenv("CORRAL_LLAMA_SERVER", str(fake_binary))
    monkeypatch.setenv("CORRAL_URL", "http://127.0.0.1:9")  # no daemon: never auto-started
    with FakeHub() as hub:
        hub.add_repo("org/tiny-GGUF", files={"tiny-Q4_K_M.gguf": model})
        monkeypatch.setenv("CORRAL_HF_ENDPOINT", hub.url)
        run(["import", str(model)], "import")
        yield model


def test_model_commands_never_trace_back(cli_env):
    model = cli_env

    @profile(50)
    @given(
        cmd=st.sampled_from(
            [
                "show",
                "show --json",
                "rm",
                "rm --keep-files",
                "rm --force",
                "import",
                "import --name",
                "ls",
                "ls --json",
            ]
        ),
        value=st.one_of(
            arg,
            st.just("tiny-q4_k_m"),
            st.just(str(model)),
            arg.map(lambda t: f"{model.parent}/{t}"),
        ),
    )
    def check(cmd, value):
        words = cmd.split()
        if words[0] == "import" and not value.startswith(str(model.parent)):
            value = str(model)  # never index outside the test's folder
        argv = words + ([value] if words[0] != "ls" else [])
        if cmd == "import --name":
            argv = ["import", str(model), "--name", value]
        run(argv, cmd)

    check()


def test_build_flag_and_key_commands_never_trace_back(cli_env):
    @profile(50)
    @given(
        cmd=st.sampled_from(
            [
                "builds use",
                "builds rm",
                "builds add",
                "builds ls",
                "flags",
                "flags --build",
                "keys create",
                "keys revoke",
                "keys ls",
                "keys create --scope inference",
            ]
        ),
        value=arg_or_int,
    )
    def check(cmd, value):
        words = cmd.split()
        argv = (
            words
            if cmd in ("builds ls", "keys ls")
            else words[:2] + ["--", value]
            if words[-1] not in ("--build",)
            else words + [value]
        )
        if cmd == "keys create --scope inference":
            argv = ["keys", "create", "--scope", "inference", "--", value]
        if cmd == "flags":
            argv = ["flags", "--", value]
        run(argv, cmd)

    check()


def test_hub_commands_never_trace_back(cli_env):
    @profile(30)
    @given(
        cmd=st.sampled_from(["search", "quants"]),
        value=arg,
        limit=st.one_of(st.none(), ints.map(str)),
    )
    def check(cmd, value, limit):
        argv = [cmd, "--", value]
        if cmd == "search" and limit is not None:
            argv = [cmd, "--limit", limit, "--", value]
        run(argv, cmd)

    check()
