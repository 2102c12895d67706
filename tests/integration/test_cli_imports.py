"""What a CLI command imports: its own command module only (commands are registered
lazily, see ``corral.cli.COMMAND_MODULES``), and ``corral fit`` no event loop.

Import sets, not timings: the time is measured by bench/fit.py (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import corral.cli
from corral.cli import COMMAND_MODULES, cli

pytest.importorskip("gguf")

CLI_MODULES = sorted(m.name for m in pkgutil.iter_modules(corral.cli.__path__))


def test_the_table_names_every_command_of_every_module():
    for name in CLI_MODULES:
        module = importlib.import_module(f"corral.cli.{name}")
        listed = {cmd for cmd, mod in COMMAND_MODULES.items() if mod == name}
        assert {c.name for c in getattr(module, "COMMANDS", [])} == listed, name


def test_help_lists_what_an_eager_group_lists():
    eager = click.Group("corral", help=cli.help)
    for name in CLI_MODULES:
        for command in getattr(importlib.import_module(f"corral.cli.{name}"), "COMMANDS", []):
            eager.add_command(command)
    lazy = CliRunner().invoke(cli, ["--help"])
    full = CliRunner().invoke(eager, ["--help"])
    assert lazy.exit_code == 0 and full.exit_code == 0
    assert lazy.output.split("Commands:")[1] == full.output.split("Commands:")[1]


def _loaded_after(env: dict, args: list[str]) -> dict:
    """Which corral.cli command modules (and asyncio) a fresh process imported to run
    ``corral ARGS``, and the command's output."""
    code = (
        "import json, sys; from click.testing import CliRunner; from corral.cli import cli; "
        f"r = CliRunner().invoke(cli, {args!r}); "
        "print(json.dumps({'code': r.exit_code, 'output': r.output, 'modules': sorted("
        "m for m in sys.modules if m.startswith('corral.cli.') or m == 'asyncio')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_fit_imports_its_module_only_and_no_event_loop(daemon_env, tmp_path):
    from tests.fakes.gguf_shapes import dense_14b

    header = dense_14b(Path(tmp_path) / "dense.gguf")
    got = _loaded_after(daemon_env, ["fit", str(header), "--devices", "12GiB,8GiB", "--json"])
    assert got["code"] == 0, got["output"]
    assert json.loads(got["output"])["fits"] is True
    assert got["modules"] == ["corral.cli.common", "corral.cli.fit", "corral.cli.terminal"]


def test_help_of_one_command_imports_that_module_only(daemon_env):
    got = _loaded_after(daemon_env, ["ps", "--help"])
    assert got["code"] == 0 and "List instances" in got["output"]
    assert "corral.cli.instances" in got["modules"]
    assert not {"corral.cli.fit", "corral.cli.hub", "corral.cli.builds", "asyncio"} & set(
        got["modules"]
    )
