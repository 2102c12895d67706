"""``corral completion SHELL``: click's completion script, and a real completion round-trip
through the ``corral`` entry point (the script's half of the protocol)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from corral.cli import cli


def corral(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """``python -m corral ARGS`` with ``env`` added: the entry point a shell would call."""
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_the_script_click_itself_prints(shell):
    printed = corral(["completion", shell])
    assert printed.returncode == 0, printed.stderr
    assert "_CORRAL_COMPLETE" in printed.stdout
    # the same bytes as click's own source mode, which the docs of click describe
    assert printed.stdout == corral([], _CORRAL_COMPLETE=f"{shell}_source").stdout


def test_the_script_names_corral_whatever_the_group_is_invoked_as():
    result = CliRunner().invoke(cli, ["completion", "bash"])  # info_name is "cli" here
    assert result.exit_code == 0
    assert "_CORRAL_COMPLETE=bash_complete" in result.output
    assert "complete -o nosort -F _corral_completion corral" in result.output


def test_an_unknown_shell_is_a_one_line_usage_error():
    result = corral(["completion", "tcsh"])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: no completion for shell 'tcsh': give one of bash, zsh, fish"
    ]


def test_bash_completes_a_command_name_through_the_entry_point():
    got = corral([], COMP_WORDS="corral ps", COMP_CWORD="1", _CORRAL_COMPLETE="bash_complete")
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == ["plain,ps"]


def test_completion_offers_the_shells_and_a_lazy_commands_options():
    shells = corral(
        [], COMP_WORDS="corral completion ", COMP_CWORD="2", _CORRAL_COMPLETE="bash_complete"
    )
    assert shells.stdout.splitlines() == ["plain,bash", "plain,zsh", "plain,fish"]
    # ps lives in a module loaded on demand (COMMAND_MODULES): its options still complete
    options = corral(
        [], COMP_WORDS="corral ps --js", COMP_CWORD="2", _CORRAL_COMPLETE="bash_complete"
    )
    assert options.stdout.splitlines() == ["plain,--json"]
