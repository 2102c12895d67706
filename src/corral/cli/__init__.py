"""The ``corral`` command. Thin: parse, call the library or the daemon, print.

Data goes to stdout, progress and errors to stderr. Errors are one line
(``error: ...``) with an exit code per error class (see :mod:`corral.errors`).
"""

from __future__ import annotations

import os
import sys

import click

from corral import __version__
from corral.errors import CorralError

#: The module of each command (its ``COMMANDS`` list holds the click object), so that a
#: command imports its own module only: ``corral fit`` or ``corral ps`` does not load the
#: other nine (~3 ms with bytecode caches, ~20 ms when compiled from source). A test
#: checks this table against the modules' ``COMMANDS``.
COMMAND_MODULES = {
    "serve": "daemon",
    "down": "daemon",
    "run": "instances",
    "ps": "instances",
    "stop": "instances",
    "start": "instances",
    "restart": "instances",
    "delete": "instances",
    "logs": "instances",
    "ls": "models",
    "show": "models",
    "rm": "models",
    "import": "models",
    "pull": "hub",
    "search": "hub",
    "quants": "hub",
    "flags": "flags",
    "builds": "builds",
    "update": "builds",
    "setup": "builds",
    "preset": "presets",
    "keys": "keys",
    "nodes": "nodes",
    "rpc": "rpc",
    "gpus": "system",
    "doctor": "system",
    "fit": "fit",
    "completion": "completion",
    "service": "service",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when one runs or ``--help`` lists them
    (click's documented lazy-loading pattern: ``list_commands`` + ``get_command``)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            self._load(self.lazy[name])
        return self.commands.get(name)

    def _load(self, module_name: str) -> None:
        import importlib

        module = importlib.import_module(f"corral.cli.{module_name}")
        for command in module.COMMANDS:
            self.commands.setdefault(command.name, command)


class CorralGroup(LazyGroup):
    """Maps CorralError to one line on stderr and its exit code.

    A failing store or home that slipped past the library's own translation (an
    ``OSError`` writing under CORRAL_HOME, a stray ``sqlite3`` error) is shown the same way,
    as StoreError/DiskFull: a user never sees a traceback for a full or read-only disk."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, take_node(args))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CorralError as exc:
            _fail(ctx, exc)
        except ConnectionRefusedError:
            click.echo("error: the corral daemon is not reachable", err=True)
            ctx.exit(7)
        except Exception as exc:
            err = _store_failure(exc)
            if err is None:
                raise
            _fail(ctx, err)


#: The commands ``--node NAME`` works with: they go through the daemon's REST API, which
#: the controller relays to the node (``/api/v1/nodes/NAME/api/...``).
NODE_COMMANDS = (
    *("run", "start", "stop", "restart", "delete", "logs", "pull"),
    *("ls", "show", "rm", "import", "gpus", "rpc"),
    *("flags", "builds", "update", "fit"),
)


def take_node(args: list[str]) -> list[str]:
    """``args`` without ``--node NAME`` (or ``--node=NAME``), which may come anywhere
    after the command up to a ``--``; NAME becomes the client's target node
    (:data:`corral.client.NODE`). A command that cannot act on a node says so."""
    import corral.client as client_mod

    client_mod.NODE = None
    command = next((a for a in args if not a.startswith("-")), None)
    out, node, i = [], None, 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        if arg == "--node" or arg.startswith("--node="):
            if arg == "--node":
                if i + 1 >= len(args):
                    raise click.UsageError("--node needs a node name (see corral nodes ls)")
                node, i = args[i + 1], i + 2
            else:
                node, i = arg.split("=", 1)[1], i + 1
            continue
        out.append(arg)
        i += 1
    if node is None:
        return out
    if command not in NODE_COMMANDS:
        raise click.UsageError(
            f"--node is not supported by `corral {command}` yet; it works with: "
            + ", ".join(NODE_COMMANDS)
        )
    from corral.types import check_name

    try:
        client_mod.NODE = check_name(node, "node name")
    except CorralError as exc:
        raise click.UsageError(exc.message) from None
    return out


def _store_failure(exc: Exception) -> CorralError | None:
    """StoreError/DiskFull for a sqlite3 error, a full disk, a read-only file system, or a
    denied write inside CORRAL_HOME; None for anything else (a real bug keeps its traceback)."""
    import errno
    import sqlite3

    from corral.settings import _home_from_env
    from corral.store.db import translate

    home = _home_from_env()
    if isinstance(exc, OSError):
        inside = bool(exc.filename) and str(exc.filename).startswith(str(home))
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) and not (
            inside and exc.errno in (errno.EACCES, errno.EPERM)
        ):
            return None
    elif not isinstance(exc, sqlite3.Error):
        return None
    return translate(exc, home)


def _fail(ctx: click.Context, exc: CorralError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    if exc.detail:
        click.echo(exc.detail, err=True)
    ctx.exit(exc.exit_code)


@click.group(
    cls=CorralGroup, lazy=COMMAND_MODULES, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """corral: run, supervise and route llama.cpp llama-server instances.

    \b
    Quick tour:
      corral serve                       start the daemon: API, web UI, /v1 (127.0.0.1:9380)
      corral pull org/repo:Q4_K_M        download a GGUF from HuggingFace (resumable)
      corral import ~/models             register GGUFs you already have, in place
      corral ls                          the local models, with their GGUF metadata
      corral fit MODEL --devices 12GiB,8GiB   memory plan: GPUs, -ngl, -ts, context, KV
      corral run MODEL -c 4096           launch llama-server with any of its flags (planned)
      corral ps                          what runs, on which port, in which state
      corral logs NAME -f                follow an instance's log
      corral stop NAME | --all           stop instances (they survive daemon restarts)
      corral flags ctx                   search the flags of the installed llama-server
      corral preset save chat -c 8192    named flag sets ('*' = defaults for every launch)
      corral keys create laptop          an API key (needed to listen beyond loopback)
      corral nodes add box URL --key -   link another corral daemon; then run ... --node box
      corral down                        stop every instance and the daemon
      corral completion bash             shell completion: eval "$(corral completion bash)"

    State lives in CORRAL_HOME (default ~/.corral). The daemon is found at
    CORRAL_URL (default http://127.0.0.1:9380) and started on demand.
    """


def main() -> None:
    """Console entry point. Ends with os._exit: interpreter teardown costs ~14 ms a call."""
    from corral.settings import private_umask

    private_umask()  # before anything is written: see corral.settings, "File modes"
    try:
        cli.main(prog_name="corral", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
